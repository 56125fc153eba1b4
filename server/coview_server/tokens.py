"""Random secrets and the hashes we keep of them.

Bearer tokens (session cookies, visitor secrets, share tokens) are stored only as
SHA-256 hashes: a leaked database must not hand out live credentials. A plain,
unsalted hash is enough here because the tokens carry 256 bits of entropy, so
there is nothing to brute-force and lookups can stay a simple indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["new_numeric_key", "new_token", "token_hash"]


def new_token(nbytes: int = 32) -> str:
    """URL-safe so the same value works in cookies, query strings and JSON unescaped."""
    if nbytes < 16:
        raise ValueError("tokens shorter than 16 bytes are guessable")
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """Hex so it fits an indexed VARCHAR(64) column on every backend."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_numeric_key(digits: int) -> str:
    """Digits only, for codes a visitor reads aloud or types on a phone keypad.

    Leading zeros are kept so every key has exactly ``digits`` characters.
    """
    if digits < 1:
        raise ValueError("digits must be at least 1")
    return f"{secrets.randbelow(10**digits):0{digits}d}"
