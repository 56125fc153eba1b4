"""Keys a phone caller types to open a screen share: minting, matching, and guess limits.

A caller on the phone has no chat widget, so nothing links their browser to the agent but
what the agent reads aloud: a short numeric key, typed at ``/share``.  Six digits are a
million values, so the key alone is guessable; these rules make guessing hopeless:

* **Every wrong attempt counts against every key waiting to be entered**, and a key is
  locked after :data:`MAX_WRONG` of them.  The key is all the caller types, so a wrong
  attempt cannot be said to aim at one waiting key rather than another; counting it
  against all of them bounds the guesses anyone gets at a key to five *whatever the number
  of addresses they use* (5 chances in a million, for six digits).  The price: anyone can
  lock the waiting keys with five wrong tries.  The agent sees it at once and makes a new
  key with one click, which is a nuisance, never a breach.
* **Attempts are rate-limited per client address** (:class:`~.security.AddressLimiter`),
  so one source cannot even spend those five tries on many keys in a row.
* **Keys are single use and expire** (the share's request timeout is the key's lifetime).

Only an HMAC of a key is kept, under a secret that lives in this process's memory alone:
a copy of the database gives nothing to brute-force (a plain hash of six digits falls in
a millisecond), and a restart, which ends every share anyway, makes every old key
worthless.  Matching compares against every waiting key with ``hmac.compare_digest`` and
does not stop at a hit, so timing does not tell how many keys wait or which one matched.

What the caller's page says never tells whether a key existed: a never-issued, expired,
used or locked key all get the same words (:data:`WRONG`).  The one exception reveals
nothing: the browser that spent a key carries a proof of it (:meth:`KeyRing.proof`, an
HttpOnly cookie), and typing that key again there is answered :data:`USED_HERE`.  The
agent, who can act on it, sees the precise reason (expired, locked, entered) live.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from .tokens import new_numeric_key

__all__ = [
    "ADDRESS_WINDOW_S",
    "DEFAULT_DIGITS",
    "MAX_DIGITS",
    "MAX_WRONG",
    "MIN_DIGITS",
    "KeyClaim",
    "KeyRing",
    "PendingKey",
    "duration",
    "match",
    "normalize",
]

DEFAULT_DIGITS = 6
#: Fewer digits than this and five guesses per key become a real chance.
MIN_DIGITS = 6
MAX_DIGITS = 12
#: Wrong attempts, counted since a key was made, that lock it.
MAX_WRONG = 5
#: The window of the per-address attempt limit, in seconds.
ADDRESS_WINDOW_S = 600.0
#: Longest text accepted in the key field before normalising (spaces, dashes).
MAX_INPUT = 64

# Outcomes of a claim (what the page shows).
OK = "ok"
WRONG = "wrong"
USED_HERE = "used_here"
RATE_LIMITED = "rate_limited"

_Owner = TypeVar("_Owner")


def normalize(text: str, digits: int) -> str | None:
    """The key in ``text``, or None unless it is exactly ``digits`` ASCII digits.

    Spaces and dashes are dropped: the console shows keys in groups of three and callers
    type what they hear.  ``str.isdigit`` is not used: it accepts other scripts' digits.
    """
    if len(text) > MAX_INPUT:
        return None
    key = "".join(c for c in text if c not in " -\t\u00a0")
    if len(key) != digits or any(c not in "0123456789" for c in key):
        return None
    return key


def duration(seconds: float) -> str:
    """``300`` -> ``"5 minutes"``, ``90`` -> ``"90 seconds"``: a key's lifetime, for people."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute" + ("s" if minutes != 1 else "")
    whole = round(seconds)
    return f"{whole} second" + ("s" if whole != 1 else "")


class KeyRing:
    """Mints keys and derives, under one in-memory secret, what may be stored of them."""

    def __init__(self, digits: int = DEFAULT_DIGITS, secret: bytes | None = None) -> None:
        if not MIN_DIGITS <= digits <= MAX_DIGITS:
            raise ValueError(f"keys have {MIN_DIGITS} to {MAX_DIGITS} digits")
        self.digits = digits
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def mint(self) -> str:
        """A uniformly random key (``secrets.randbelow``), leading zeros kept."""
        return new_numeric_key(self.digits)

    def digest(self, key: str) -> str:
        """What is stored and compared: HMAC-SHA256 of the key, hex."""
        return self._mac(b"key|", key)

    def proof(self, key: str) -> str:
        """What the browser that spent ``key`` keeps: proof it did, useless as the key."""
        return self._mac(b"spent|", key)

    def _mac(self, purpose: bytes, key: str) -> str:
        return hmac.new(self._secret, purpose + key.encode("ascii"), hashlib.sha256).hexdigest()

    @staticmethod
    def same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


@dataclass
class PendingKey:
    """One key waiting to be entered.  Times are the caller's clock (sans-I/O)."""

    digest: str
    expires_at: float
    wrong: int = 0
    used: bool = False
    locked: bool = False

    def usable(self, now: float) -> bool:
        return not self.used and not self.locked and now < self.expires_at

    def count_wrong(self) -> bool:
        """Count one wrong attempt; True when this one locked the key."""
        self.wrong += 1
        if self.wrong >= MAX_WRONG and not self.locked:
            self.locked = True
            return True
        return False


def match(
    ring: KeyRing, key: str, pending: Iterable[tuple[_Owner, PendingKey]], now: float
) -> _Owner | None:
    """The owner of the usable key equal to ``key``, comparing against every one.

    Digests are unique among usable keys (the hub re-mints on a collision), so at most
    one matches; the loop still runs to the end so its time does not say where.
    """
    digest = ring.digest(key)
    found: _Owner | None = None
    for owner, entry in pending:
        hit = KeyRing.same(entry.digest, digest)
        if hit and entry.usable(now) and found is None:
            found = owner
    return found


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """The hub's answer to a typed key; ``popup_url`` and ``proof`` only with :data:`OK`."""

    outcome: str
    share: str | None = None
    popup_url: str | None = None
    proof: str | None = None
