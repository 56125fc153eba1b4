"""Negotiation: offer/answer, candidate buffering, ICE restarts, and a full exchange
between two machines through fake browsers."""

import pytest
from hypothesis import given, settings, strategies as st

from coview import negotiation, protocol
from coview.negotiation import (
    ANSWERER,
    DISCONNECTED_GRACE_S,
    MAX_RESTARTS,
    OFFERER,
    Negotiation,
    NegotiationError,
)

PC = "pc-7"


def cand(n, ufrag="EsAw"):
    return {
        "candidate": "candidate:"
        + str(n)
        + " 1 udp 2122260223 192.168.1.20 "
        + str(50000 + n)
        + " typ host generation 0 ufrag "
        + ufrag,
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": ufrag,
    }


def send(msg):
    return ("send", msg)


def offer(sdp="o-sdp"):
    return {"type": "offer", "pc": PC, "sdp": sdp}


def answer(sdp="a-sdp"):
    return {"type": "answer", "pc": PC, "sdp": sdp}


def ice(c):
    return {"type": "ice", "pc": PC, "candidate": c}


RESTART = {"type": "restart", "pc": PC}


def connected_offerer(max_restarts=MAX_RESTARTS):
    n = Negotiation(PC, OFFERER, max_restarts=max_restarts)
    n.start()
    n.local_description("offer", "o-sdp")
    n.remote_message(answer())
    n.remote_description_set()
    n.connection_state("connected", 0.0)
    n.actions()
    return n


def connected_answerer(max_restarts=MAX_RESTARTS):
    n = Negotiation(PC, ANSWERER, max_restarts=max_restarts)
    n.remote_message(offer())
    n.remote_description_set()
    n.local_description("answer", "a-sdp")
    n.connection_state("connected", 0.0)
    n.actions()
    return n


def test_constants_and_construction():
    assert DISCONNECTED_GRACE_S == 4.0
    assert MAX_RESTARTS == 2
    n = Negotiation(PC, OFFERER)
    assert (n.pc, n.role, n.state, n.history, n.restarts) == (PC, "offerer", "new", ["new"], 0)
    assert n.max_restarts == MAX_RESTARTS
    assert n.actions() == []
    with pytest.raises(ValueError):
        Negotiation(PC, "viewer")


# -- the two histories ------------------------------------------------------------------------


def test_offerer_history_and_actions():
    n = Negotiation(PC, OFFERER)
    n.start()
    assert n.actions() == [("state", "offering"), ("create_offer", False)]
    n.local_description("offer", "o-sdp")
    assert n.actions() == [send(offer())]
    n.remote_message(answer())
    assert n.actions() == [("set_remote", "answer", "a-sdp"), ("state", "connecting")]
    n.remote_description_set()
    assert n.actions() == []
    n.connection_state("connecting", 1.0)
    assert n.actions() == []
    n.connection_state("connected", 2.0)
    assert n.actions() == [("state", "connected")]
    assert n.history == ["new", "offering", "connecting", "connected"]
    assert n.state == "connected"


def test_start_is_for_the_offerer_and_only_once():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.start()
    assert n.actions() == [("state", "offering"), ("create_offer", False)]
    a = Negotiation(PC, ANSWERER)
    a.start()
    assert a.actions() == []
    assert a.history == ["new"]


def test_answerer_history_and_actions():
    n = Negotiation(PC, ANSWERER)
    n.remote_message(offer())
    assert n.actions() == [
        ("state", "answering"),
        ("set_remote", "offer", "o-sdp"),
        ("create_answer",),
    ]
    n.remote_description_set()
    assert n.actions() == []
    n.local_description("answer", "a-sdp")
    assert n.actions() == [send(answer()), ("state", "connecting")]
    n.connection_state("connected", 1.0)
    assert n.actions() == [("state", "connected")]
    assert n.history == ["new", "answering", "connecting", "connected"]


def test_sent_messages_are_valid_protocol_messages():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.local_candidate(cand(1))
    n.local_candidate(None)
    n.local_description("offer", "v=0\r\n")
    sent = [a for a in n.actions() if a[0] == "send"]
    assert len(sent) == 3
    for action in sent:
        for direction in (protocol.C2S, protocol.S2C):
            text = protocol.encode(action[1])
            assert protocol.decode(text, direction) == action[1]


# -- local candidates -------------------------------------------------------------------------


def test_offerer_holds_local_candidates_until_the_offer_is_sent():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.actions()
    n.local_candidate(cand(1))
    n.local_candidate(cand(2))
    assert n.actions() == []
    n.local_description("offer", "o-sdp")
    assert n.actions() == [send(offer()), send(ice(cand(1))), send(ice(cand(2)))]
    n.local_candidate(cand(3))
    n.local_candidate(None)  # end of candidates
    assert n.actions() == [send(ice(cand(3))), send(ice(None))]


def test_answerer_holds_local_candidates_until_the_answer_is_sent():
    n = Negotiation(PC, ANSWERER)
    n.remote_message(offer())
    n.remote_description_set()
    n.actions()
    n.local_candidate(cand(1))
    n.local_candidate(cand(2))
    n.local_candidate(None)
    assert n.actions() == []
    n.local_description("answer", "a-sdp")
    assert n.actions() == [
        send(answer()),
        ("state", "connecting"),
        send(ice(cand(1))),
        send(ice(cand(2))),
        send(ice(None)),
    ]
    n.local_candidate(cand(3))
    assert n.actions() == [send(ice(cand(3)))]


# -- remote candidates ------------------------------------------------------------------------


def test_offerer_holds_remote_candidates_until_the_answer_is_set():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.local_description("offer", "o-sdp")
    n.actions()
    n.remote_message(ice(cand(1)))  # raced ahead of the answer through another path
    n.remote_message(answer())
    n.remote_message(ice(cand(2)))
    n.remote_message(ice(None))
    assert n.actions() == [("set_remote", "answer", "a-sdp"), ("state", "connecting")]
    n.remote_description_set()
    assert n.actions() == [
        ("add_candidate", cand(1)),
        ("add_candidate", cand(2)),
        ("add_candidate", None),
    ]
    n.remote_message(ice(cand(3)))
    assert n.actions() == [("add_candidate", cand(3))]


def test_answerer_holds_remote_candidates_until_the_offer_is_set():
    n = Negotiation(PC, ANSWERER)
    n.remote_message(ice(cand(1)))
    assert n.actions() == []
    n.remote_message(offer())
    n.remote_message(ice(cand(2)))
    assert n.actions() == [
        ("state", "answering"),
        ("set_remote", "offer", "o-sdp"),
        ("create_answer",),
    ]
    n.remote_description_set()
    assert n.actions() == [("add_candidate", cand(1)), ("add_candidate", cand(2))]
    n.remote_message(ice(cand(3)))
    assert n.actions() == [("add_candidate", cand(3))]


def test_restart_answer_holds_remote_candidates_again():
    # The restart's answer replaces the remote description: candidates that follow it
    # wait for remote_description_set, as on the first exchange.
    n = connected_offerer()
    n.connection_state("failed", 10.0)
    n.local_description("offer", "o2")
    n.remote_message(answer("a2"))
    n.remote_message(ice(cand(5, "new")))
    assert n.actions() == [
        ("state", "restarting"),
        ("create_offer", True),
        send(offer("o2")),
        ("set_remote", "answer", "a2"),
        ("state", "connecting"),
    ]
    n.remote_description_set()
    assert n.actions() == [("add_candidate", cand(5, "new"))]


def test_restart_offer_holds_remote_candidates_again():
    n = connected_answerer()
    n.remote_message(offer("o2"))
    n.remote_message(ice(cand(5, "new")))
    assert n.actions() == [
        ("state", "answering"),
        ("set_remote", "offer", "o2"),
        ("create_answer",),
    ]
    n.remote_description_set()
    assert n.actions() == [("add_candidate", cand(5, "new"))]


# -- out of order -----------------------------------------------------------------------------


def test_answer_with_no_offer_is_out_of_order():
    n = Negotiation(PC, OFFERER)
    with pytest.raises(NegotiationError) as info:
        n.remote_message(answer())
    assert info.value.code == "out_of_order"
    n.start()
    with pytest.raises(NegotiationError) as info:  # offer created, not yet sent
        n.remote_message(answer())
    assert info.value.code == "out_of_order"
    n.local_description("offer", "o-sdp")
    n.remote_message(answer())
    n.actions()
    with pytest.raises(NegotiationError) as info:  # a second answer
        n.remote_message(answer())
    assert info.value.code == "out_of_order"
    assert n.actions() == []
    assert n.history == ["new", "offering", "connecting"]


def test_answer_to_the_answerer_is_out_of_order():
    n = Negotiation(PC, ANSWERER)
    with pytest.raises(NegotiationError) as info:
        n.remote_message(answer())
    assert info.value.code == "out_of_order"
    assert n.actions() == []


def test_offer_to_the_offerer_is_out_of_order():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.actions()
    with pytest.raises(NegotiationError) as info:
        n.remote_message(offer())
    assert info.value.code == "out_of_order"
    assert n.actions() == []
    assert n.history == ["new", "offering"]


def test_other_messages_are_not_negotiation():
    n = Negotiation(PC, OFFERER)
    for msg in ({"type": "share_stop", "share": "s"}, {"pc": PC}):
        with pytest.raises(NegotiationError) as info:
            n.remote_message(msg)
        assert info.value.code == "unknown_type"


def test_negotiation_error_has_code_and_text():
    err = NegotiationError("out_of_order", "nope")
    assert isinstance(err, Exception)
    assert (err.code, err.text, str(err)) == ("out_of_order", "nope", "nope")


# -- failure and ICE restart ------------------------------------------------------------------


def test_offerer_restarts_on_failure_up_to_max_restarts_then_fails():
    n = connected_offerer()
    for attempt in (1, 2):
        n.connection_state("failed", 10.0 * attempt)
        assert n.actions() == [("state", "restarting"), ("create_offer", True)]
        assert n.restarts == attempt
        n.local_candidate(cand(attempt))  # held until the new offer is out
        assert n.actions() == []
        n.local_description("offer", "o" + str(attempt))
        assert n.actions() == [send(offer("o" + str(attempt))), send(ice(cand(attempt)))]
        n.remote_message(answer("a" + str(attempt)))
        n.remote_description_set()
        n.connection_state("connected", 10.0 * attempt + 1)
        assert n.actions() == [
            ("set_remote", "answer", "a" + str(attempt)),
            ("state", "connecting"),
            ("state", "connected"),
        ]
    n.connection_state("failed", 50.0)
    assert n.actions() == [("state", "failed"), ("failed", "ice")]
    assert n.restarts == MAX_RESTARTS
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "connected",
        "failed",
    ]


def test_failure_while_connecting_restarts_too():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.local_description("offer", "o")
    n.remote_message(answer())
    n.actions()
    n.connection_state("failed", 3.0)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]


def test_no_restarts_allowed_fails_at_once():
    n = connected_offerer(max_restarts=0)
    n.connection_state("failed", 1.0)
    assert n.actions() == [("state", "failed"), ("failed", "ice")]
    assert n.history[-1] == "failed"


def test_failed_is_final():
    n = connected_offerer(max_restarts=0)
    n.connection_state("failed", 1.0)
    n.actions()
    n.connection_state("connected", 2.0)
    n.connection_state("failed", 3.0)
    n.connection_state("disconnected", 4.0)
    n.tick(100.0)
    n.remote_message(RESTART)  # the answerer asking too: still one "failed" report
    assert n.actions() == []
    assert n.state == "failed"
    n.close()
    assert n.actions() == [("state", "closed")]


def test_answerer_asks_the_offerer_to_restart_on_failure():
    n = connected_answerer()
    n.connection_state("failed", 5.0)
    assert n.actions() == [("state", "restarting"), send(RESTART)]
    assert n.restarts == 1
    # The offerer's restart offer arrives.
    n.remote_message(offer("o2"))
    n.remote_description_set()
    n.local_candidate(cand(9))
    n.local_description("answer", "a2")
    n.connection_state("connected", 6.0)
    assert n.actions() == [
        ("state", "answering"),
        ("set_remote", "offer", "o2"),
        ("create_answer",),
        send(answer("a2")),
        ("state", "connecting"),
        send(ice(cand(9))),
        ("state", "connected"),
    ]


def test_answerer_gives_up_after_max_restarts():
    n = connected_answerer(max_restarts=1)
    n.connection_state("failed", 5.0)
    n.remote_message(offer("o2"))
    n.remote_description_set()
    n.local_description("answer", "a2")
    n.actions()
    n.connection_state("failed", 9.0)
    assert n.actions() == [("state", "failed"), ("failed", "ice")]


def test_answerer_ignores_restart_requests():
    n = connected_answerer()
    n.remote_message(RESTART)
    assert n.actions() == []
    assert n.state == "connected"


def test_offerer_restarts_when_the_answerer_asks():
    n = connected_offerer()
    n.remote_message(RESTART)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.restarts == 1


def test_one_restart_at_a_time():
    # Both ends see the same failure: the offerer restarts on its own, then the
    # answerer's request arrives.  A second offer would cross the first.
    n = connected_offerer()
    n.connection_state("failed", 10.0)
    n.local_description("offer", "o2")
    n.remote_message(RESTART)
    n.connection_state("failed", 11.0)
    assert n.actions() == [("state", "restarting"), ("create_offer", True), send(offer("o2"))]
    assert n.restarts == 1
    n.remote_message(answer("a2"))
    assert n.actions() == [("set_remote", "answer", "a2"), ("state", "connecting")]


def test_answerer_asks_once_per_restart():
    n = connected_answerer()
    n.connection_state("disconnected", 1.0)
    n.tick(1.0 + DISCONNECTED_GRACE_S)
    n.connection_state("failed", 30.0)
    assert n.actions() == [("state", "restarting"), send(RESTART)]
    assert n.restarts == 1


# -- disconnected grace -----------------------------------------------------------------------


def test_disconnected_for_the_grace_period_restarts():
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.tick(10.0)
    n.tick(10.0 + DISCONNECTED_GRACE_S - 0.001)
    assert n.actions() == []
    assert n.state == "connected"
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    n.tick(100.0)
    assert n.actions() == []


def test_repeated_disconnected_reports_keep_the_first_time():
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.connection_state("disconnected", 12.0)
    n.tick(14.0)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]


def test_reconnecting_within_the_grace_period_cancels_the_restart():
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.tick(12.0)
    n.connection_state("connected", 13.0)
    n.tick(14.0)
    n.tick(100.0)
    assert n.actions() == []
    assert n.restarts == 0
    assert n.history == ["new", "offering", "connecting", "connected"]


def test_failure_during_the_grace_period_restarts_once():
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.connection_state("failed", 11.0)
    n.tick(20.0)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.restarts == 1


def test_answerer_disconnected_too_long_asks_for_a_restart():
    n = connected_answerer()
    n.connection_state("disconnected", 10.0)
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "restarting"), send(RESTART)]


def test_a_restart_that_leaves_ice_down_gets_the_grace_again_then_fails():
    # A cut media path: the browser says "disconnected" once and nothing new until its
    # consent timeout (~30 s), however many restarts are exchanged meanwhile.
    n = Negotiation(PC, OFFERER, report=True)
    n.start()
    n.local_description("offer", "o-sdp")
    n.remote_message(answer())
    n.remote_description_set()
    n.connection_state("connected", 1.0)
    n.connection_state("disconnected", 10.0)
    n.actions()
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    n.tick(30.0)  # the restart's offer is not even out: its grace has not begun
    assert n.actions() == []
    for attempt, t in ((1, 31.0), (2, 31.0 + DISCONNECTED_GRACE_S)):
        n.local_description("offer", "o" + str(attempt))
        n.remote_message(answer("a" + str(attempt)))
        n.remote_description_set()
        assert n.actions() == [
            send(offer("o" + str(attempt))),
            ("set_remote", "answer", "a" + str(attempt)),
            ("state", "connecting"),
        ]
        n.tick(t)  # descriptions exchanged, ICE still down: the grace starts now
        n.tick(t + DISCONNECTED_GRACE_S - 0.001)
        assert n.actions() == []
        n.tick(t + DISCONNECTED_GRACE_S)
        if attempt == 1:
            assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.actions() == [("state", "failed"), ("failed", "ice"), status("failed")]
    assert n.restarts == MAX_RESTARTS
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "restarting",
        "connecting",
        "failed",
    ]
    n.tick(100.0)
    n.connection_state("failed", 101.0)  # the browser's own verdict, much later
    assert n.actions() == []


def test_answerer_whose_restarts_leave_ice_down_asks_again_then_fails():
    n = Negotiation(PC, ANSWERER, report=True)
    n.remote_message(offer())
    n.remote_description_set()
    n.local_description("answer", "a-sdp")
    n.connection_state("connected", 1.0)
    n.connection_state("disconnected", 10.0)
    n.actions()
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    for attempt, t in ((1, 15.0), (2, 15.0 + DISCONNECTED_GRACE_S)):
        assert n.actions() == [("state", "restarting"), send(RESTART)]
        n.remote_message(offer("o" + str(attempt)))
        n.remote_description_set()
        n.local_description("answer", "a" + str(attempt))
        assert n.actions() == [
            ("state", "answering"),
            ("set_remote", "offer", "o" + str(attempt)),
            ("create_answer",),
            send({"type": "answer", "pc": PC, "sdp": "a" + str(attempt)}),
            ("state", "connecting"),
        ]
        n.tick(t)
        n.tick(t + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "failed"), ("failed", "ice"), status("failed")]
    assert n.history == [
        "new",
        "answering",
        "connecting",
        "connected",
        "restarting",
        "answering",
        "connecting",
        "restarting",
        "answering",
        "connecting",
        "failed",
    ]


def test_a_restart_after_failed_with_no_new_state_gets_the_grace_too():
    n = connected_offerer()
    n.connection_state("failed", 10.0)
    n.local_description("offer", "o1")
    n.remote_message(answer("a1"))
    n.remote_description_set()
    n.actions()
    n.tick(11.0)
    n.tick(11.0 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "restarting",
    ]


def test_a_restart_that_reconnects_is_not_restarted_again():
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    n.local_description("offer", "o1")
    n.remote_message(answer("a1"))
    n.remote_description_set()
    n.tick(15.0)
    n.connection_state("connected", 16.0)
    n.tick(15.0 + DISCONNECTED_GRACE_S)
    n.tick(100.0)
    assert n.restarts == 1
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "connected",
    ]


def test_a_request_crossing_our_restart_is_ignored_and_the_grace_decides():
    # Both ends saw the cut: our restart went out, the answerer's request crossed it.
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    n.local_description("offer", "o1")
    n.remote_message(answer("a1"))
    n.remote_description_set()
    n.tick(14.5)
    n.actions()
    n.remote_message(RESTART)
    n.tick(14.5 + DISCONNECTED_GRACE_S - 0.001)
    assert n.actions() == []
    assert n.restarts == 1
    n.tick(14.5 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.restarts == 2
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "restarting",
    ]


def test_a_request_after_our_restart_reconnected_is_honoured():
    n = connected_offerer()
    n.connection_state("failed", 10.0)
    n.local_description("offer", "o1")
    n.remote_message(answer("a1"))
    n.remote_description_set()
    n.connection_state("connected", 11.0)
    n.actions()
    n.remote_message(RESTART)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.restarts == 2


def test_a_requested_restart_replaces_our_own_pending_grace():
    # The answerer asked first: our own disconnected timer is for the same outage.
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.remote_message(RESTART)
    n.local_description("offer", "o1")
    n.remote_message(answer("a1"))
    n.remote_description_set()
    n.actions()
    n.tick(10.0 + DISCONNECTED_GRACE_S)  # the old timer's deadline: the new grace starts
    n.tick(14.0 + DISCONNECTED_GRACE_S - 0.001)
    assert n.actions() == []
    n.tick(14.0 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "restarting"), ("create_offer", True)]
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "restarting",
    ]


def test_a_first_connection_still_checking_has_no_grace():
    # Before ICE ever went down, connecting takes as long as it takes (the server's
    # relay_fallback_s covers a first connection that never comes).
    n = Negotiation(PC, OFFERER)
    n.start()
    n.local_description("offer", "o-sdp")
    n.remote_message(answer())
    n.remote_description_set()
    n.connection_state("connecting", 1.0)
    n.tick(2.0)
    n.tick(100.0)
    assert n.history == ["new", "offering", "connecting"]


# -- close ------------------------------------------------------------------------------------


def poke_everything(n, now):
    n.start()
    n.local_description("offer", "x")
    n.local_description("answer", "x")
    n.local_candidate(cand(1))
    n.local_candidate(None)
    n.remote_message(offer())
    n.remote_message(answer())
    n.remote_message(ice(cand(2)))
    n.remote_message(RESTART)
    n.remote_message({"type": "nonsense"})
    n.remote_description_set()
    for state in ("connected", "disconnected", "failed", "closed"):
        n.connection_state(state, now)
    n.tick(now + 100)
    n.close()


@pytest.mark.parametrize("role", [OFFERER, ANSWERER])
def test_after_close_everything_is_ignored(role):
    n = connected_offerer() if role == OFFERER else connected_answerer()
    n.connection_state("disconnected", 49.0)
    n.close()
    assert n.actions() == [("state", "closed")]
    poke_everything(n, 50.0)
    assert n.actions() == []
    assert n.state == "closed"
    assert n.history[-1] == "closed"


def test_close_drops_held_candidates():
    n = Negotiation(PC, OFFERER)
    n.start()
    n.local_candidate(cand(1))
    n.remote_message(ice(cand(2)))
    n.actions()
    n.close()
    n.local_description("offer", "o")
    n.remote_description_set()
    assert n.actions() == [("state", "closed")]


def test_a_pending_disconnect_does_not_restart_after_close():
    n = connected_offerer()
    n.connection_state("disconnected", 10.0)
    n.close()
    n.tick(10.0 + DISCONNECTED_GRACE_S)
    assert n.actions() == [("state", "closed")]
    assert n.history == ["new", "offering", "connecting", "connected", "closed"]


def test_close_before_start():
    n = Negotiation(PC, OFFERER)
    n.close()
    n.close()
    poke_everything(n, 1.0)
    assert n.actions() == [("state", "closed")]
    assert n.history == ["new", "closed"]


# -- two machines, two fake browsers, one fake server -----------------------------------------


class FakeBrowser:
    """An RTCPeerConnection and its page shell, reduced to what negotiation touches.

    Work is queued the way a browser queues it: ``ops`` is the peer connection's
    operations chain (descriptions, in order), ``gathered`` its ICE agent's
    candidate events.  The test's scheduler runs the heads of the queues in any order.
    """

    def __init__(self, name, role, net):
        self.name = name
        self.neg = Negotiation(PC, role)
        self.net = net  # outgoing wire frames, in order
        self.ops = []
        self.gathered = []
        self.local = None
        self.remote = None
        self.generation = -1  # bumped by every local description
        self.emitted = []  # (our description, candidate) as gathered, in order
        self.added = []  # (candidate, remote description at the time)
        self.log = []
        self.failed = []
        self.states = []
        self.restart_offers = []

    def sdp(self, kind):
        return kind + ":" + self.name + ":" + str(self.generation)

    def run_actions(self):
        for action in self.neg.actions():
            kind = action[0]
            if kind == "create_offer":
                self.restart_offers.append(action[1])
                self.ops.append(("set_local", "offer"))
            elif kind == "create_answer":
                self.ops.append(("set_local", "answer"))
            elif kind == "set_remote":
                self.ops.append(("set_remote", action[1], action[2]))
            elif kind == "add_candidate":
                assert self.remote is not None, "candidate before the remote description"
                self.added.append((action[1], self.remote))
            elif kind == "send":
                # Through the real codec, as the shell and the server do.
                self.net.append(protocol.encode(action[1]))
            elif kind == "failed":
                self.failed.append(action[1])
            else:
                assert kind == "state"
                self.states.append(action[1])

    def step_op(self):
        op = self.ops.pop(0)
        if op[0] == "set_local":
            self.generation += 1
            self.local = self.sdp(op[1])
            self.log.append(("local", self.local))
            # Gathering starts now; the shell hears of the description a step later.
            for i in range(2):
                self.gathered.append(self.candidate(i))
            self.gathered.append(None)
            self.ops.insert(0, ("notify_local", op[1], self.local))
        elif op[0] == "notify_local":
            self.neg.local_description(op[1], op[2])
        elif op[0] == "set_remote":
            self.remote = op[2]
            self.log.append(("remote", op[2]))
            self.ops.insert(0, ("notify_remote",))
        else:
            self.neg.remote_description_set()
        self.run_actions()

    def candidate(self, i):
        c = cand(i, self.name + str(self.generation))
        c["candidate"] += " sess " + self.local
        return c

    def step_gather(self):
        c = self.gathered.pop(0)
        self.emitted.append((self.local, c))
        self.neg.local_candidate(c)
        self.run_actions()

    def deliver(self, frame):
        msg = protocol.decode(frame, protocol.C2S)  # the server checks it ...
        routed = protocol.decode(protocol.encode(msg), protocol.S2C)  # ... and forwards it
        self.neg.remote_message(routed)
        self.run_actions()


class Rng:
    """A seeded generator (64-bit LCG) with the two calls the exchange makes.

    Not ``random.Random``: MicroPython has none, and one seed should pick the same
    interleaving on CPython, Pyodide and MicroPython (tests/e2e/test_core_in_browser.py
    runs this file on both browser interpreters).
    """

    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.state = (seed * 0x9E3779B97F4A7C15 + 1) & self.MASK

    def below(self, n):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & self.MASK
        return (self.state >> 33) % n

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


class Exchange:
    def __init__(self, rng):
        self.rng = rng
        self.to_answerer = []
        self.to_offerer = []
        self.offerer = FakeBrowser("O", OFFERER, self.to_answerer)
        self.answerer = FakeBrowser("A", ANSWERER, self.to_offerer)

    def choices(self):
        out = []
        for b in (self.offerer, self.answerer):
            if b.ops:
                out.append(b.step_op)
            if b.gathered:
                out.append(b.step_gather)
        if self.to_answerer:
            out.append(lambda: self.answerer.deliver(self.to_answerer.pop(0)))
        if self.to_offerer:
            out.append(lambda: self.offerer.deliver(self.to_offerer.pop(0)))
        return out

    def settle(self):
        for _ in range(1000):
            options = self.choices()
            if not options:
                return
            self.rng.choice(options)()
        raise AssertionError("the exchange did not settle")

    def connect(self, now):
        for b in (self.offerer, self.answerer):
            b.neg.connection_state("connected", now)
            b.run_actions()

    def check_converged(self):
        o, a = self.offerer, self.answerer
        assert o.local is not None and o.local == a.remote
        assert a.local is not None and a.local == o.remote
        assert o.local.startswith("offer:") and a.local.startswith("answer:")
        for me, peer in ((o, a), (a, o)):
            # Every candidate the peer gathered for its current description arrived, in
            # order, and each was added on top of the description it belongs to.
            current = [c for local, c in peer.emitted if local == peer.local]
            added = [c for c, _ in me.added]
            assert added[-len(current) :] == current
            for c, remote in me.added:
                if c is not None:
                    assert c["candidate"].endswith("sess " + remote)


def start_exchange(seed):
    ex = Exchange(Rng(seed))
    ex.offerer.neg.start()
    ex.offerer.run_actions()
    return ex


def test_exchange_converges_in_order():
    ex = Exchange(Rng(0))
    # A deterministic, in-order run: every queue drained head-first.
    ex.rng = type("First", (), {"choice": staticmethod(lambda seq: seq[0])})()
    ex.offerer.neg.start()
    ex.offerer.run_actions()
    ex.settle()
    ex.check_converged()
    ex.connect(1.0)
    assert ex.offerer.neg.history == ["new", "offering", "connecting", "connected"]
    assert ex.answerer.neg.history == ["new", "answering", "connecting", "connected"]
    assert ex.offerer.log == [("local", "offer:O:0"), ("remote", "answer:A:0")]
    assert ex.answerer.log == [("remote", "offer:O:0"), ("local", "answer:A:0")]
    assert [c for c, _ in ex.answerer.added] == [c for _, c in ex.offerer.emitted]
    assert [c for c, _ in ex.offerer.added] == [c for _, c in ex.answerer.emitted]


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_exchange_converges_under_any_interleaving(seed):
    ex = start_exchange(seed)
    ex.settle()
    ex.check_converged()
    assert [c for c, _ in ex.answerer.added] == [c for _, c in ex.offerer.emitted]
    assert [c for c, _ in ex.offerer.added] == [c for _, c in ex.answerer.emitted]
    ex.connect(1.0)
    assert ex.offerer.neg.state == ex.answerer.neg.state == "connected"


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), who=st.sampled_from(["O", "A", "both"]))
def test_exchange_recovers_with_an_ice_restart(seed, who):
    ex = start_exchange(seed)
    ex.settle()
    ex.connect(1.0)
    failing = {"O": [ex.offerer], "A": [ex.answerer], "both": [ex.offerer, ex.answerer]}[who]
    ex.rng.shuffle(failing)
    for b in failing:
        b.neg.connection_state("failed", 2.0)
        b.run_actions()
    ex.settle()
    ex.check_converged()
    assert ex.offerer.restart_offers == [False, True]
    assert ex.offerer.local == "offer:O:1"
    assert ex.answerer.local == "answer:A:1"
    assert ex.offerer.neg.restarts == 1
    ex.connect(3.0)
    for b in (ex.offerer, ex.answerer):
        assert b.neg.state == "connected"
        assert b.failed == []
        assert "restarting" in b.neg.history or b is ex.answerer
    assert ex.offerer.neg.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "connected",
    ]


def test_exchange_reports_failure_after_the_restarts_run_out():
    ex = start_exchange(1)
    ex.settle()
    ex.connect(1.0)
    for attempt in range(MAX_RESTARTS):
        ex.offerer.neg.connection_state("failed", 10.0 + attempt)
        ex.offerer.run_actions()
        ex.settle()
        ex.check_converged()
        ex.connect(11.0 + attempt)
    ex.offerer.neg.connection_state("failed", 50.0)
    ex.offerer.run_actions()
    assert ex.offerer.failed == ["ice"]
    assert ex.offerer.neg.state == "failed"
    assert ex.to_answerer == []


def test_module_has_no_clock_or_io():
    assert not hasattr(negotiation, "time")
    assert not hasattr(negotiation, "asyncio")


# -- status reports (the server's cue to fall back to its media relay) -------------------------


def status(state):
    return send({"type": "peer_status", "pc": PC, "state": state})


def test_report_connected_once_per_connection_and_again_after_a_restart():
    n = Negotiation(PC, OFFERER, report=True)
    n.start()
    n.local_description("offer", "o-sdp")
    n.remote_message(answer())
    n.remote_description_set()
    n.actions()
    n.connection_state("connected", 1.0)
    assert n.actions() == [("state", "connected"), status("connected")]
    n.connection_state("connected", 1.5)  # browsers repeat states; the report is not repeated
    assert n.actions() == []
    n.connection_state("failed", 2.0)
    n.local_description("offer", "o-sdp-2")
    n.remote_message(answer("a-sdp-2"))
    n.remote_description_set()
    n.actions()
    n.connection_state("connected", 3.0)
    assert n.actions() == [("state", "connected"), status("connected")]
    assert n.history == [
        "new",
        "offering",
        "connecting",
        "connected",
        "restarting",
        "connecting",
        "connected",
    ]
    for msg in (a[1] for a in [status("connected"), status("failed")]):
        assert protocol.validate(msg, protocol.C2S) == msg


def test_report_failed_after_the_last_restart():
    n = Negotiation(PC, ANSWERER, max_restarts=1, report=True)
    n.remote_message(offer())
    n.remote_description_set()
    n.local_description("answer", "a-sdp")
    n.actions()
    n.connection_state("failed", 1.0)
    assert n.actions() == [("state", "restarting"), send(RESTART)]
    n.remote_message(offer("o-sdp-2"))
    n.remote_description_set()
    n.local_description("answer", "a-sdp-2")
    n.actions()
    n.connection_state("failed", 5.0)
    assert n.actions() == [("state", "failed"), ("failed", "ice"), status("failed")]
    assert n.history == [
        "new",
        "answering",
        "connecting",
        "restarting",
        "answering",
        "connecting",
        "failed",
    ]


def test_no_reports_unless_asked():
    n = connected_offerer()
    n.connection_state("failed", 1.0)
    assert all(a[0] != "send" or a[1]["type"] != "peer_status" for a in n.actions())
