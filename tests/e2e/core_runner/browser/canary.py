"""Tests of the runner itself, run in the browser next to the core's tests.

Some fail on purpose: tests/e2e/test_core_in_browser.py checks that each gets exactly the
outcome listed in its CANARY table, so a runner that cannot fail (or that skips what it does
not understand) fails there.  Named canary.py, not test_*.py: CPython's pytest must not
collect it.
"""

import pytest
from hypothesis import given, settings, strategies as st

CALLS = []
TORN_DOWN = []


def test_passes():
    assert 1 + 1 == 2


def test_assert_fails():
    assert [1, 2] == [1, 3], "canary: lists differ"


def test_error_fails():
    raise RuntimeError("canary: boom")


def test_raises_not_raised_fails():
    with pytest.raises(KeyError):
        pass


def test_raises_wrong_exception_fails():
    with pytest.raises(KeyError):
        raise ValueError("canary: not a KeyError")


def test_raises_match():
    with pytest.raises(ValueError, match="^bad [a-z]+$") as info:
        raise ValueError("bad value")
    assert info.value.args == ("bad value",)
    assert pytest.raises(ZeroDivisionError, lambda: 1 // 0).type is ZeroDivisionError


def test_raises_match_mismatch_fails():
    with pytest.raises(ValueError, match="^other$"):
        raise ValueError("bad value")


def test_pytest_fail_fails():
    pytest.fail("canary: failed on purpose")


def test_approx():
    assert 0.1 + 0.2 == pytest.approx(0.3)
    assert [1.0, {"a": 2.0000001}] == pytest.approx([1, {"a": 2}])


def test_approx_mismatch_fails():
    assert 0.31 == pytest.approx(0.3)


def test_skip_is_skipped():
    pytest.skip("canary: skipped on purpose")


@pytest.mark.skipif(True, reason="canary")
def test_skipif_is_skipped():
    raise AssertionError("must not run")


@pytest.mark.xfail(reason="canary: known to fail")
def test_xfail_is_xfailed():
    raise AssertionError("expected")


@pytest.mark.xfail(reason="canary: strict xfail that passes")
def test_xpass_fails():
    pass


@pytest.mark.parametrize("n", [1, 2, 3])
def test_param(n):
    assert n != 2


@pytest.mark.parametrize("a", ["x", "y"])
@pytest.mark.parametrize(("b", "c"), [(1, 2), pytest.param(3, 4, id="three")])
def test_stacked(a, b, c):
    assert a in "xy" and c == b + 1


@pytest.fixture
def number():
    return 41


@pytest.fixture
def resource(number):
    yield number + 1
    TORN_DOWN.append(number)


def test_fixture(number, resource):
    assert (number, resource) == (41, 42)


def test_fixture_was_torn_down():
    assert TORN_DOWN == [41]


def test_missing_fixture_fails(nope):
    pass


@settings(max_examples=37)
@given(st.integers(0, 10), flag=st.booleans())
def test_given_runs_max_examples(x, flag):
    assert 0 <= x <= 10 and flag in (True, False)
    CALLS.append(x)


def test_given_ran_that_many():
    assert len(CALLS) == 37
    assert len(set(CALLS)) > 3


@given(st.lists(st.integers(0, 100), min_size=1))
def test_given_fails(values):
    assert max(values) < 90, "canary: a large value"
