"""Limits per client address and per request, against floods and oversized input.

* :class:`AddressGate` admits new WebSockets per client address: at most ``max_open``
  sockets open at once, and new ones at ``rate`` per second on average with bursts of
  ``burst`` (settings ``ws_address_max``, ``ws_address_rate``, ``ws_address_burst``).  It
  sits in front of the handshake, so a flood of visitor handshakes (each of which creates a
  visitor) is bounded per address; the per-socket message limit is in ``signaling``.
* :class:`BodyLimit` is ASGI middleware that refuses HTTP request bodies over
  ``max_bytes`` with 413, before a form parser buffers them or spools them to disk.
  Coview's only request bodies are small forms (login, logout, phone share key).
* :func:`fit_frame` keeps what the server sends within the protocol's own cap (64 KiB a
  frame, and the table's list lengths), which every page's decoder enforces: a ``history``
  keeps its newest messages and ``conversations`` its most recent items that fit; anything
  else that does not fit is not sent.

Behind a reverse proxy the address is the proxy's unless the server is told to trust its
forwarding headers (uvicorn ``--proxy-headers``), as for ``security.AddressLimiter``.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coview import protocol as P

__all__ = ["MAX_BODY_BYTES", "AddressGate", "BodyLimit", "fit_frame"]

#: Request bodies above this size get 413: every form Coview serves is far smaller.
MAX_BODY_BYTES = 64 * 1024


class AddressGate:
    """Admission of new WebSockets, per client address."""

    #: Distinct addresses whose rate is remembered before idle ones are forgotten.
    MAX_ADDRESSES = 10000

    def __init__(self, max_open: int, rate: float, burst: float) -> None:
        if max_open < 1 or rate <= 0 or burst < 1:
            raise ValueError("an address gate needs max_open >= 1, rate > 0 and burst >= 1")
        self.max_open = max_open
        self.rate = rate
        self.burst = burst
        #: Sockets open per address (entries leave at zero).
        self.open: dict[str, int] = {}
        #: Token bucket per address: (tokens, stamp).
        self.buckets: dict[str, tuple[float, float]] = {}

    def admit(self, address: str, now: float) -> str | None:
        """Count a new socket from ``address``; a refusal text (and nothing counted) if over."""
        if self.open.get(address, 0) >= self.max_open:
            return f"too many connections from your address (at most {self.max_open} at once)"
        tokens, stamp = self.buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        if tokens < 1.0:
            self.buckets[address] = (tokens, now)
            return "too many new connections from your address; try again shortly"
        self.buckets[address] = (tokens - 1.0, now)
        self.open[address] = self.open.get(address, 0) + 1
        if len(self.buckets) > self.MAX_ADDRESSES:
            self._forget(now)
        return None

    def release(self, address: str) -> None:
        """A socket admitted from ``address`` closed."""
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)

    def _forget(self, now: float) -> None:
        # An address whose bucket has refilled is the same as one never seen.
        refill = self.burst / self.rate
        self.buckets = {a: b for a, b in self.buckets.items() if now - b[1] < refill}
        if len(self.buckets) > self.MAX_ADDRESSES:  # a spray of addresses, all recent
            self.buckets.clear()


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse HTTP request bodies over ``max_bytes`` (413), declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    await _plain(send, 400, b"Bad Content-Length")
                    return
                if int(value) > self.max_bytes:
                    await _plain(send, 413, b"Request body too large")
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body with no declared length
                    raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge:
            if not started:
                await _plain(send, 413, b"Request body too large")


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


#: Server messages whose list may outgrow a frame: (field, keep the end of the list).
#: ``history`` is oldest first (keep the newest), ``conversations`` most recent first.
_TRIMMABLE = {"history": ("messages", True), "conversations": ("items", False)}


def _fits(text: str) -> bool:
    # ``protocol.encode`` writes ASCII (json.dumps escapes the rest): characters are bytes.
    return len(text) <= P.MAX_MESSAGE_BYTES


def fit_frame(msg: dict[str, Any]) -> str | None:
    """``msg`` encoded within the protocol's limits, its list trimmed if need be; else None."""
    text = P.encode(msg)
    trim = _TRIMMABLE.get(msg["type"])
    if trim is None:
        return text if _fits(text) else None
    name, keep_end = trim
    items = list(msg[name])
    cap = P.MESSAGES[msg["type"]][1][name][2] or len(items)
    if _fits(text) and len(items) <= cap:
        return text

    def encoded(count: int) -> str:
        kept = (items[len(items) - count :] if count else []) if keep_end else items[:count]
        return P.encode(dict(msg, **{name: kept}))

    lo, hi = 0, min(len(items), cap)  # the most items that fit: binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits(encoded(mid)):
            lo = mid
        else:
            hi = mid - 1
    text = encoded(lo)
    return text if _fits(text) else None
