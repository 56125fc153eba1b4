"""Liveness: ping after 20 s of silence, dead after 45 s; anything heard counts."""

from hypothesis import given, strategies as st

from coview.liveness import DEAD, DEAD_AFTER_S, OK, PING, PING_AFTER_S, Liveness

T0 = 5000.0


def test_constants():
    assert (PING_AFTER_S, DEAD_AFTER_S) == (20.0, 45.0)
    assert (OK, PING, DEAD) == ("ok", "ping", "dead")


def test_quiet_peer_is_pinged_once_then_declared_dead():
    live = Liveness(T0)
    assert live.tick(T0) == OK
    assert live.tick(T0 + 19.999) == OK
    assert live.tick(T0 + 20.0) == PING
    assert live.tick(T0 + 20.0) == OK  # one ping per silence
    assert live.tick(T0 + 44.999) == OK
    assert live.tick(T0 + 45.0) == DEAD
    assert live.tick(T0 + 46.0) == DEAD  # stays dead


def test_hearing_anything_resets_both_clocks_and_rearms_the_ping():
    live = Liveness(T0)
    assert live.tick(T0 + 20) == PING
    live.heard(T0 + 30)  # the pong, or any other message
    assert live.last_heard == T0 + 30
    assert live.tick(T0 + 49.999) == OK
    assert live.tick(T0 + 50) == PING
    assert live.tick(T0 + 74.999) == OK
    assert live.tick(T0 + 75) == DEAD


def test_a_chatty_peer_is_never_pinged():
    live = Liveness(T0)
    for second in range(0, 600, 10):
        live.heard(T0 + second)
        assert live.tick(T0 + second + 9) == OK


def test_a_late_first_tick_goes_straight_to_dead():
    live = Liveness(T0)
    assert live.tick(T0 + 100) == DEAD


def test_custom_limits():
    live = Liveness(T0, ping_after=1.0, dead_after=3.0)
    assert (live.ping_after, live.dead_after) == (1.0, 3.0)
    assert live.tick(T0 + 0.5) == OK
    assert live.tick(T0 + 1.0) == PING
    assert live.tick(T0 + 2.9) == OK
    assert live.tick(T0 + 3.0) == DEAD


@given(
    st.lists(
        st.tuples(st.sampled_from(["heard", "tick"]), st.floats(min_value=0, max_value=30)),
        max_size=40,
    )
)
def test_verdicts_follow_the_silence(events):
    live = Liveness(0.0)
    now = 0.0
    last = 0.0
    pinged = False
    for what, step in events:
        now += step
        if what == "heard":
            live.heard(now)
            last, pinged = now, False
            continue
        verdict = live.tick(now)
        quiet = now - last
        if quiet >= DEAD_AFTER_S:
            assert verdict == DEAD
        elif quiet >= PING_AFTER_S and not pinged:
            assert verdict == PING
            pinged = True
        else:
            assert verdict == OK
