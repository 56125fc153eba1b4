from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from coview_server.passwords import (
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def test_hash_format_and_verify() -> None:
    encoded = hash_password("correct horse battery staple")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt + "==")) == 16
    assert verify_password("correct horse battery staple", encoded)
    assert not verify_password("correct horse battery stapl", encoded)
    assert not needs_rehash(encoded)


def test_hash_matches_reference_scrypt() -> None:
    encoded = hash_password("pw-123456")
    _, n, r, p, salt, digest = encoded.split("$")
    raw_salt = base64.b64decode(salt + "==")
    expected = hashlib.scrypt(
        b"pw-123456", salt=raw_salt, n=int(n), r=int(r), p=int(p), maxmem=64 << 20, dklen=32
    )
    assert _b64(expected) == digest


def test_same_password_gets_different_salts() -> None:
    assert hash_password("same password") != hash_password("same password")


def test_older_parameters_still_verify_but_need_rehash() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"legacy-pass", salt=salt, n=2**12, r=8, p=1, dklen=32)
    encoded = f"scrypt${2**12}$8$1${_b64(salt)}${_b64(digest)}"
    assert verify_password("legacy-pass", encoded)
    assert not verify_password("other-pass", encoded)
    assert needs_rehash(encoded)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plaintext",
        "bcrypt$2b$12$abc",
        "scrypt$16384$8$1$c2FsdA$",
        "scrypt$16384$8$1$!!!$AAAA",
        "scrypt$16383$8$1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,  # n not a power of two
        "scrypt$1073741824$8$1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43,  # absurd n
        "scrypt$x$8$1$c2FsdA$AAAA",
    ],
)
def test_malformed_hashes_never_verify(encoded: str) -> None:
    assert not verify_password("anything", encoded)
    assert needs_rehash(encoded)


def test_empty_and_huge_passwords_are_refused_for_hashing() -> None:
    with pytest.raises(ValueError):
        hash_password("")
    with pytest.raises(ValueError):
        hash_password("x" * 1025)
    assert not verify_password("x" * 5000, hash_password("short-but-fine"))


def test_policy() -> None:
    check_password_policy("eight ch")
    for bad in ["", "seven77", " " * 12, "y" * 1025]:
        with pytest.raises(ValueError):
            check_password_policy(bad)


@settings(max_examples=8, deadline=None)
@given(st.text(min_size=1, max_size=64))
def test_roundtrip_any_unicode(password: str) -> None:
    encoded = hash_password(password)
    assert verify_password(password, encoded)
    assert not verify_password(password + "x", encoded)
