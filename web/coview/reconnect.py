"""When a page tries its signaling socket again after it closed: a sans-I/O policy.

A server restart drops every socket at the same instant; if every page came back on the
same schedule they would arrive in waves.  Delays therefore grow exponentially and carry
"equal jitter" (half the step fixed, half random), so pages spread out but never retry at
once; a connection that stayed up for ``stable_after`` seconds resets the growth, while
one that the server closes right after accepting it does not (a crash loop is not
hammered).  Some closes must not be retried at all: the server refused us for good (a
fatal ``error``: signed out, link used, share ended) or refused the socket by policy.

The shell owns the clock, the randomness and the timer: ``closed`` returns how long to
wait, or ``None`` for "do not reconnect", and ``opened`` is called once the server's
``welcome`` arrived.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

BASE_S = 0.5
FACTOR = 2.0
CAP_S = 15.0
STABLE_AFTER_S = 10.0

#: Close codes after which reconnecting cannot help: 1008 is the server's policy refusal
#: (origin, address limit, failed handshake), 1000 from our own ``close()``.
FINAL_CLOSE_CODES = (1008,)


class Backoff:
    def __init__(
        self,
        rand: "Callable[[], float]",
        base: float = BASE_S,
        factor: float = FACTOR,
        cap: float = CAP_S,
        stable_after: float = STABLE_AFTER_S,
    ) -> None:
        """``rand`` returns a float in [0, 1): ``Math.random`` in a page, a seeded
        ``random.Random().random`` in tests."""
        self.rand = rand
        self.base = base
        self.factor = factor
        self.cap = cap
        self.stable_after = stable_after
        self.attempt = 0  # consecutive failed attempts since the last stable connection
        self.opened_at: float | None = None
        self.final = False
        self.history: list[tuple[str, float | None]] = []

    def opened(self, now: float) -> None:
        """The server welcomed us: this connection counts from now."""
        self.opened_at = now
        self.history.append(("opened", None))

    def refused(self) -> None:
        """The server refused us for good (a fatal ``error``): never reconnect."""
        self.final = True
        self.history.append(("refused", None))

    def closed(self, now: float, code: "int | None" = None, by_us: bool = False) -> "float | None":
        """The socket closed (or never opened): seconds to wait, or None to stay closed."""
        if by_us or self.final or code in FINAL_CLOSE_CODES:
            self.final = True
            self.history.append(("stop", None))
            return None
        if self.opened_at is not None and now - self.opened_at >= self.stable_after:
            self.attempt = 0
        self.opened_at = None
        step = min(self.cap, self.base * self.factor**self.attempt)
        if step < self.cap:  # past the cap the exponent stops growing (no float overflow)
            self.attempt += 1
        delay = step / 2 + self.rand() * step / 2
        self.history.append(("retry", delay))
        return delay
