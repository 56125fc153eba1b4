from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from coview_server.tokens import new_numeric_key, new_token, token_hash


def test_new_token_is_urlsafe_and_long_enough() -> None:
    token = new_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_new_tokens_differ() -> None:
    assert len({new_token() for _ in range(1000)}) == 1000


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        new_token(8)


def test_token_hash_is_sha256_hex() -> None:
    assert token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert token_hash(new_token()) != token_hash(new_token())


@given(st.integers(min_value=1, max_value=30))
def test_numeric_key_has_exact_digit_count(digits: int) -> None:
    key = new_numeric_key(digits)
    assert len(key) == digits
    assert key.isdigit() and key.isascii()


def test_numeric_key_keeps_leading_zeros() -> None:
    # With one digit, "0" must come up in a few hundred draws.
    assert "0" in {new_numeric_key(1) for _ in range(500)}


def test_numeric_key_rejects_zero_digits() -> None:
    with pytest.raises(ValueError):
        new_numeric_key(0)
