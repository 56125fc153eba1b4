"""Password hashing with scrypt from the standard library.

scrypt is memory-hard, ships with CPython (via OpenSSL) and so adds no native
dependency to a self-hosted install. The parameters are encoded in each hash so
they can be raised later: :func:`needs_rehash` tells the login path to upgrade a
stored hash the next time the user proves they know the password.

Encoded form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` (standard base64, no padding).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "check_password_policy",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

SCHEME = "scrypt"
N = 2**14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32

MIN_PASSWORD_LENGTH = 8
# Hashing cost grows with input length (PBKDF2 pre-pass); cap it so a login form
# cannot be turned into a CPU sink. Far above any passphrase a human types.
MAX_PASSWORD_LENGTH = 1024

# Refuse to honour absurd parameters from a tampered hash string: they would
# otherwise let whoever can write the database stall the server on every login.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL's default memory cap (32 MiB) is barely above what n=2**14, r=8
    # needs; size the cap from the parameters so stronger settings keep working.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen
    )


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError("password too long")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, N, R, P, HASH_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64encode(salt)}${_b64encode(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _b64decode(parts[4]), _b64decode(parts[5])
    except (ValueError, binascii.Error):
        return None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        return None
    if not salt or not 16 <= len(digest) <= 64:
        return None
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """False for a wrong password and for a malformed hash alike, so callers have one path."""
    parsed = _parse(encoded)
    if parsed is None or len(password) > MAX_PASSWORD_LENGTH:
        return False
    n, r, p, salt, expected = parsed
    actual = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    parsed = _parse(encoded)
    if parsed is None:
        return True
    n, r, p, salt, digest = parsed
    return (n, r, p) != (N, R, P) or len(salt) != SALT_BYTES or len(digest) != HASH_BYTES


def check_password_policy(password: str) -> None:
    """Rules for passwords a person chooses (CLI, future settings page).

    Kept out of :func:`hash_password` so operator-supplied bootstrap secrets and
    test fixtures are not second-guessed; interactive entry points call this.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise ValueError("password must not be only whitespace")
