"""The reconnect policy: exponential steps with equal jitter, capped, reset only by a
connection that stayed up, and no retry after a final refusal."""

from hypothesis import given, strategies as st

from coview.reconnect import BASE_S, CAP_S, STABLE_AFTER_S, Backoff

T0 = 1000.0


def fixed(value):
    return lambda: value


class Rng:
    """A seeded ``random()`` in [0, 1) (64-bit LCG), standing in for ``random.Random``:
    MicroPython has none, and these tests also run there (test_core_in_browser.py)."""

    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.state = (seed * 0x9E3779B97F4A7C15 + 1) & self.MASK

    def random(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & self.MASK
        return (self.state >> 11) / float(1 << 53)


def test_constants():
    assert (BASE_S, CAP_S, STABLE_AFTER_S) == (0.5, 15.0, 10.0)


def test_steps_double_up_to_the_cap_with_half_of_each_step_fixed():
    low = Backoff(fixed(0.0))
    high = Backoff(fixed(0.999999))
    lows = [low.closed(T0 + i) for i in range(8)]
    highs = [high.closed(T0 + i) for i in range(8)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 7.5, 7.5, 7.5]
    assert [round(h, 3) for h in highs] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert low.history == [("retry", d) for d in lows]


def test_a_connection_that_stayed_up_resets_the_growth():
    b = Backoff(fixed(0.0))
    for i in range(4):
        b.closed(T0 + i)
    b.opened(T0 + 10)
    assert b.closed(T0 + 10 + STABLE_AFTER_S) == 0.25
    assert b.history[-2:] == [("opened", None), ("retry", 0.25)]


def test_a_server_that_closes_right_after_welcome_is_not_hammered():
    b = Backoff(fixed(0.0))
    delays = []
    for i in range(5):
        delays.append(b.closed(T0 + 2 * i))
        b.opened(T0 + 2 * i + 1)  # welcomed, then dropped a second later
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_no_retry_after_our_own_close_a_policy_close_or_a_fatal_refusal():
    ours = Backoff(fixed(0.5))
    assert ours.closed(T0, 1000, by_us=True) is None
    assert ours.closed(T0 + 1) is None  # and never again
    policy = Backoff(fixed(0.5))
    assert policy.closed(T0, 1008) is None
    refused = Backoff(fixed(0.5))
    refused.opened(T0)
    refused.refused()
    assert refused.closed(T0 + 1, 1000) is None
    assert refused.history == [("opened", None), ("refused", None), ("stop", None)]


def test_abnormal_and_restart_closes_are_retried():
    for code in (None, 1001, 1006, 1011, 1012, 4000):
        assert Backoff(fixed(0.0)).closed(T0, code) == 0.25


@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=2**32))
def test_every_delay_is_within_its_step_and_never_overflows(failures, seed):
    rng = Rng(seed)
    b = Backoff(rng.random)
    delay = None
    for i in range(failures + 1):
        delay = b.closed(T0 + i)
    step = min(CAP_S, BASE_S * 2.0 ** min(failures, 64))
    assert delay is not None and step / 2 <= delay <= step


def test_jitter_spreads_a_crowd():
    """A thousand pages dropped at once come back over the step, not at one instant."""
    rng = Rng(7)
    delays = sorted(Backoff(rng.random).closed(T0) for _ in range(1000))
    assert delays[0] >= 0.25 and delays[-1] <= 0.5
    assert delays[900] - delays[100] > 0.15
