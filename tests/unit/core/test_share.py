"""ShareSession: whole state histories and exact action lists for every path."""

import pytest
from hypothesis import given, strategies as st

from coview import share
from coview.share import (
    ACCEPTED,
    ENDED,
    LIVE,
    OPEN_TIMEOUT_S,
    PICK_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    REQUESTED,
    STATES,
    WAITING,
    ShareError,
    ShareSession,
)

T0 = 1000.0


def ended(reason):
    return ("state", ENDED, reason)


def went(state):
    return ("state", state, None)


# Every event a session takes, by name.
EVENTS = {
    "accept": lambda s, now: s.accept(now),
    "decline": lambda s, now: s.decline(now),
    "sharer_joined": lambda s, now: s.sharer_joined(now),
    "media_started": lambda s, now: s.media_started("monitor", now),
    "media_stopped": lambda s, now: s.media_stopped(now),
    "stop_by_sharer": lambda s, now: s.stop(True, now),
    "stop_by_viewer": lambda s, now: s.stop(False, now),
}
STOPS = {"stop_by_sharer", "stop_by_viewer"}
LEGAL = {
    REQUESTED: {"accept", "decline", "sharer_joined"} | STOPS,
    ACCEPTED: {"decline", "sharer_joined"} | STOPS,
    WAITING: {"media_started"} | STOPS,
    LIVE: {"media_started", "media_stopped"} | STOPS,
    ENDED: set(),
}
# The events that lead from a fresh session to each state.
PATH = {
    REQUESTED: [],
    ACCEPTED: ["accept"],
    WAITING: ["accept", "sharer_joined"],
    LIVE: ["accept", "sharer_joined", "media_started"],
    ENDED: ["decline"],
}


def session_in(state, now=T0):
    s = ShareSession(now)
    for name in PATH[state]:
        EVENTS[name](s, now)
    assert s.state == state
    s.actions()
    return s


def test_constants():
    assert STATES == ("requested", "accepted", "waiting", "live", "ended")
    assert (REQUEST_TIMEOUT_S, OPEN_TIMEOUT_S, PICK_TIMEOUT_S) == (120.0, 60.0, 300.0)
    reasons = (
        share.DECLINED,
        share.STOPPED_BY_SHARER,
        share.STOPPED_BY_VIEWER,
        share.SHARER_LEFT,
        share.VIEWER_LEFT,
        share.REQUESTER_LEFT,
        share.REQUEST_TIMEOUT,
        share.OPEN_TIMEOUT,
        share.PICK_TIMEOUT,
        share.SERVER_SHUTDOWN,
        share.SHARER_LOST,
    )
    assert len(set(reasons)) == len(reasons)
    assert share.RESUME_TIMEOUT_S == 20.0 and share.PARTIES == ("sharer", "viewer")


def test_a_new_session():
    s = ShareSession(T0)
    assert s.state == REQUESTED
    assert s.history == ["requested"]
    assert s.reason is None and s.surface is None
    assert s.since == T0
    assert not s.ended
    assert s.actions() == []
    assert s.deadline() == T0 + REQUEST_TIMEOUT_S


def test_unknown_initial_state_is_refused():
    with pytest.raises(ValueError):
        ShareSession(T0, state="paused")


def test_initial_state_may_be_given():
    s = ShareSession(T0, state=WAITING)
    assert s.history == ["waiting"]
    assert s.deadline() == T0 + PICK_TIMEOUT_S
    s.media_started("window", T0 + 1)
    assert s.history == ["waiting", "live"]


# -- whole paths ----------------------------------------------------------------------------


def test_happy_path():
    s = ShareSession(T0)
    s.accept(T0 + 5)
    assert s.actions() == [went("accepted")]
    s.sharer_joined(T0 + 8)
    assert s.actions() == [went("waiting")]
    s.media_started("monitor", T0 + 20)
    assert s.actions() == [went("live")]
    assert s.surface == "monitor"
    s.stop(True, T0 + 600)
    assert s.actions() == [ended("stopped_by_sharer")]
    assert s.history == ["requested", "accepted", "waiting", "live", "ended"]
    assert s.ended and s.reason == "stopped_by_sharer"
    assert s.since == T0 + 600
    assert s.actions() == []


def test_actions_accumulate_until_drained():
    s = ShareSession(T0)
    s.accept(T0)
    s.sharer_joined(T0)
    s.media_started("window", T0)
    assert s.actions() == [went("accepted"), went("waiting"), went("live")]
    assert s.actions() == []


def test_decline_from_requested():
    s = ShareSession(T0)
    s.decline(T0 + 3)
    assert s.actions() == [ended("declined")]
    assert s.history == ["requested", "ended"]
    assert s.reason == "declined"


def test_decline_after_accepting():
    s = ShareSession(T0)
    s.accept(T0 + 1)
    s.decline(T0 + 2)
    assert s.actions() == [went("accepted"), ended("declined")]
    assert s.history == ["requested", "accepted", "ended"]


def test_joining_from_requested_implies_acceptance():
    s = ShareSession(T0)
    s.sharer_joined(T0 + 2)
    assert s.actions() == [went("waiting")]
    assert s.history == ["requested", "waiting"]
    assert s.deadline() == T0 + 2 + PICK_TIMEOUT_S
    s.media_started("browser", T0 + 3)
    assert s.history == ["requested", "waiting", "live"]


@pytest.mark.parametrize("state", [REQUESTED, ACCEPTED, WAITING, LIVE])
@pytest.mark.parametrize(
    ("by_sharer", "reason"), [(True, "stopped_by_sharer"), (False, "stopped_by_viewer")]
)
def test_stop_in_each_state(state, by_sharer, reason):
    s = session_in(state)
    s.stop(by_sharer, T0 + 9)
    assert s.actions() == [ended(reason)]
    assert s.history == list(share.STATES[: share.STATES.index(state) + 1]) + ["ended"]
    assert s.reason == reason
    assert s.deadline() is None


def test_surface_switch_while_live_reports_and_stays_live():
    s = session_in(LIVE)
    assert s.surface == "monitor"
    s.media_started("window", T0 + 30)
    assert s.actions() == [went("live")]
    assert s.surface == "window"
    assert s.history == ["requested", "accepted", "waiting", "live"]
    assert s.since == T0  # still live since the first pick
    s.media_started("browser", T0 + 40)
    assert s.actions() == [went("live")]
    assert s.surface == "browser"
    assert s.history == ["requested", "accepted", "waiting", "live"]


def test_media_stopped_then_repick():
    s = session_in(LIVE)
    s.media_stopped(T0 + 50)
    assert s.actions() == [went("waiting")]
    assert s.deadline() == T0 + 50 + PICK_TIMEOUT_S  # the pick clock restarts
    s.media_started("window", T0 + 70)
    assert s.actions() == [went("live")]
    assert s.surface == "window"
    s.media_stopped(T0 + 80)
    s.media_started("monitor", T0 + 90)
    s.stop(False, T0 + 100)
    assert s.actions() == [went("waiting"), went("live"), ended("stopped_by_viewer")]
    assert s.history == [
        "requested",
        "accepted",
        "waiting",
        "live",
        "waiting",
        "live",
        "waiting",
        "live",
        "ended",
    ]


def test_repick_that_never_comes_times_out():
    s = session_in(LIVE)
    s.media_stopped(T0 + 50)
    s.actions()
    s.tick(T0 + 50 + PICK_TIMEOUT_S)
    assert s.actions() == [ended("pick_timeout")]
    assert s.history == ["requested", "accepted", "waiting", "live", "waiting", "ended"]


@pytest.mark.parametrize(
    "reason",
    ["sharer_left", "viewer_left", "requester_left", "server_shutdown"],
)
@pytest.mark.parametrize("state", [REQUESTED, ACCEPTED, WAITING, LIVE])
def test_end_for_outside_reasons(state, reason):
    s = session_in(state)
    s.end(reason, T0 + 4)
    assert s.actions() == [ended(reason)]
    assert s.history[-2:] == [state, "ended"]
    assert s.reason == reason


def test_end_is_idempotent():
    s = session_in(LIVE)
    s.end("sharer_left", T0 + 1)
    s.end("viewer_left", T0 + 2)
    s.end("server_shutdown", T0 + 3)
    assert s.actions() == [ended("sharer_left")]
    assert s.history == ["requested", "accepted", "waiting", "live", "ended"]
    assert s.reason == "sharer_left"
    assert s.since == T0 + 1


def test_end_after_stop_keeps_the_first_reason():
    s = session_in(WAITING)
    s.stop(True, T0 + 1)
    s.end("sharer_left", T0 + 2)
    assert s.actions() == [ended("stopped_by_sharer")]
    assert s.reason == "stopped_by_sharer"


# -- timeouts ---------------------------------------------------------------------------------

TIMEOUTS = [
    (REQUESTED, REQUEST_TIMEOUT_S, "request_timeout"),
    (ACCEPTED, OPEN_TIMEOUT_S, "open_timeout"),
    (WAITING, PICK_TIMEOUT_S, "pick_timeout"),
]


@pytest.mark.parametrize(("state", "limit", "reason"), TIMEOUTS)
def test_timeout_exactly_at_the_deadline_and_not_one_tick_before(state, limit, reason):
    s = session_in(state, now=T0)
    assert s.deadline() == T0 + limit
    s.tick(T0)
    s.tick(T0 + limit - 0.001)
    assert s.state == state
    assert s.actions() == []
    s.tick(T0 + limit)
    assert s.actions() == [ended(reason)]
    assert s.history == list(share.STATES[: share.STATES.index(state) + 1]) + ["ended"]
    assert s.reason == reason
    assert s.since == T0 + limit
    s.tick(T0 + 10 * limit)
    assert s.actions() == []


@pytest.mark.parametrize(("state", "limit", "reason"), TIMEOUTS)
def test_late_tick_still_times_out_once(state, limit, reason):
    s = session_in(state)
    s.tick(T0 + limit + 3600)
    s.tick(T0 + limit + 7200)
    assert s.actions() == [ended(reason)]


def test_each_state_has_its_own_clock():
    s = ShareSession(T0)
    s.tick(T0 + 100)
    s.accept(T0 + 100)  # 20 s before the request deadline
    assert s.deadline() == T0 + 100 + OPEN_TIMEOUT_S
    s.tick(T0 + 100 + OPEN_TIMEOUT_S - 1)
    s.sharer_joined(T0 + 159)
    assert s.deadline() == T0 + 159 + PICK_TIMEOUT_S
    s.tick(T0 + 159 + PICK_TIMEOUT_S - 1)
    s.media_started("window", T0 + 400)
    assert s.deadline() is None
    s.tick(T0 + 10**6)
    assert s.state == LIVE
    assert s.history == ["requested", "accepted", "waiting", "live"]


def test_deadline_values():
    s = ShareSession(T0, request_timeout=10, open_timeout=20, pick_timeout=30)
    assert s.deadline() == T0 + 10
    s.accept(T0 + 1)
    assert s.deadline() == T0 + 21
    s.sharer_joined(T0 + 2)
    assert s.deadline() == T0 + 32
    s.media_started("monitor", T0 + 3)
    assert s.deadline() is None
    s.media_stopped(T0 + 4)
    assert s.deadline() == T0 + 34
    s.stop(True, T0 + 5)
    assert s.deadline() is None


def test_custom_timeouts_are_used():
    s = ShareSession(T0, request_timeout=5.0)
    s.tick(T0 + 4.999)
    assert s.state == REQUESTED
    s.tick(T0 + 5.0)
    assert s.actions() == [ended("request_timeout")]


def test_tick_at_the_float_deadline_times_out():
    # 0.7 + 0.1 - 0.7 < 0.1 in floats: tick(deadline()) must still fire.
    s = ShareSession(0.7, request_timeout=0.1)
    s.tick(s.deadline())
    assert s.actions() == [ended("request_timeout")]


@given(
    since=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    limit=st.floats(min_value=0.001, max_value=1e5, allow_nan=False),
)
def test_tick_at_deadline_always_fires(since, limit):
    s = ShareSession(since, request_timeout=limit)
    deadline = s.deadline()
    s.tick(since)
    if since < deadline:
        assert s.state == REQUESTED
    s.tick(deadline)
    assert s.state == ENDED
    assert s.reason == "request_timeout"


# -- illegal events ---------------------------------------------------------------------------

ILLEGAL = [
    (state, name)
    for state in (REQUESTED, ACCEPTED, WAITING, LIVE)
    for name in sorted(EVENTS)
    if name not in LEGAL[state]
]


def test_the_illegal_table_is_what_we_think():
    assert ILLEGAL == [
        ("requested", "media_started"),
        ("requested", "media_stopped"),
        ("accepted", "accept"),
        ("accepted", "media_started"),
        ("accepted", "media_stopped"),
        ("waiting", "accept"),
        ("waiting", "decline"),
        ("waiting", "media_stopped"),
        ("waiting", "sharer_joined"),
        ("live", "accept"),
        ("live", "decline"),
        ("live", "sharer_joined"),
    ]


@pytest.mark.parametrize(("state", "name"), ILLEGAL)
def test_illegal_event_is_out_of_order_and_changes_nothing(state, name):
    s = session_in(state)
    history = list(s.history)
    surface = s.surface
    with pytest.raises(ShareError) as info:
        EVENTS[name](s, T0 + 1)
    assert info.value.code == "out_of_order"
    assert state in info.value.text
    assert s.state == state
    assert s.history == history
    assert s.surface == surface
    assert s.since == T0
    assert s.actions() == []


@pytest.mark.parametrize("name", sorted(EVENTS))
@pytest.mark.parametrize("how", ["declined", "stopped", "ended", "timed_out"])
def test_every_event_after_the_end_raises_ended(name, how):
    s = ShareSession(T0)
    if how == "declined":
        s.decline(T0)
    elif how == "stopped":
        s.stop(False, T0)
    elif how == "ended":
        s.end("requester_left", T0)
    else:
        s.tick(T0 + REQUEST_TIMEOUT_S)
    s.actions()
    history = list(s.history)
    with pytest.raises(ShareError) as info:
        EVENTS[name](s, T0 + 1)
    assert info.value.code == "ended"
    assert s.history == history
    assert s.actions() == []


@pytest.mark.parametrize(("state", "name"), [(st_, n) for st_ in LEGAL for n in sorted(LEGAL[st_])])
def test_every_legal_event_is_accepted(state, name):
    s = session_in(state)
    EVENTS[name](s, T0 + 1)
    assert len(s.actions()) == 1


def test_share_error_is_an_exception_with_code_and_text():
    err = ShareError("out_of_order", "cannot accept while live")
    assert isinstance(err, Exception)
    assert (err.code, err.text, str(err)) == (
        "out_of_order",
        "cannot accept while live",
        "cannot accept while live",
    )


@given(st.lists(st.sampled_from(sorted(EVENTS) + ["tick"]), max_size=25))
def test_any_event_sequence_keeps_the_machine_consistent(names):
    s = ShareSession(0.0)
    now = 0.0
    emitted = []
    for name in names:
        now += 50.0
        before = s.state
        if name == "tick":
            s.tick(now)
        else:
            try:
                EVENTS[name](s, now)
            except ShareError as err:
                assert err.code == ("ended" if before == ENDED else "out_of_order")
                assert s.state == before
                continue
        emitted.extend(s.actions())
    # The history is exactly the state changes reported, ENDED at most once and last.
    changes = [a[1] for a in emitted if a[0] == "state"]
    collapsed = [
        c for i, c in enumerate(changes) if not (c == LIVE and i and changes[i - 1] == LIVE)
    ]
    assert s.history == ["requested"] + collapsed
    assert s.history.count(ENDED) <= 1
    if ENDED in s.history:
        assert s.history[-1] == ENDED and s.reason is not None
    for i in range(1, len(s.history)):  # (MicroPython's zip takes no strict=)
        assert s.history[i] in share._TRANSITIONS[s.history[i - 1]]


# -- a party away (its signaling connection dropped) -------------------------------------


def test_a_lost_sharer_that_comes_back_keeps_the_share_live():
    s = session_in(LIVE)
    s.lost("sharer", share.SHARER_LOST, T0 + 10)
    assert s.actions() == [("away", "sharer", True)]
    assert s.deadline() == T0 + 10 + share.RESUME_TIMEOUT_S
    s.tick(T0 + 29.999)
    s.found("sharer", T0 + 29.999)
    assert s.actions() == [("away", "sharer", False)]
    s.tick(T0 + 1000)
    assert s.state == LIVE and s.history == ["requested", "accepted", "waiting", "live"]
    assert s.deadline() is None and s.away == {}


def test_a_lost_party_that_never_comes_back_ends_the_share_with_the_reason_given():
    s = session_in(LIVE)
    s.lost("viewer", share.REQUESTER_LEFT, T0 + 1)
    s.lost("viewer", "ignored: already away", T0 + 5)  # the first loss counts
    s.tick(T0 + 21)
    assert s.actions() == [("away", "viewer", True), ended(share.REQUESTER_LEFT)]
    assert s.away == {} and s.deadline() is None


def test_both_away_the_first_deadline_wins():
    s = session_in(LIVE)
    s.lost("viewer", share.REQUESTER_LEFT, T0 + 3)
    s.lost("sharer", share.SHARER_LOST, T0 + 1)
    assert s.deadline() == T0 + 21
    s.found("sharer", T0 + 2)
    assert s.deadline() == T0 + 23
    s.tick(T0 + 23)
    assert s.reason == share.REQUESTER_LEFT


def test_away_does_not_stop_the_state_clock():
    """Waiting for a pick keeps its own deadline while the sharer is away."""
    s = session_in(WAITING)
    s.lost("sharer", share.SHARER_LOST, T0 + PICK_TIMEOUT_S - 5)
    s.tick(T0 + PICK_TIMEOUT_S)
    assert s.reason == share.PICK_TIMEOUT


def test_found_without_lost_and_events_after_the_end_do_nothing():
    s = session_in(LIVE)
    s.found("sharer", T0)
    assert s.actions() == []
    s.stop(True, T0 + 1)
    s.actions()
    s.lost("sharer", share.SHARER_LOST, T0 + 2)
    s.found("sharer", T0 + 3)
    assert s.actions() == [] and s.away == {}
    with pytest.raises(ValueError):
        session_in(LIVE).lost("presenter", share.SHARER_LOST, T0)


def test_custom_resume_timeout():
    s = ShareSession(T0, state=LIVE, resume_timeout=4.0)
    s.lost("sharer", share.SHARER_LOST, T0)
    s.tick(T0 + 3.999)
    assert s.state == LIVE
    s.tick(T0 + 4.0)
    assert s.reason == share.SHARER_LOST
