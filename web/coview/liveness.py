"""When to ping a quiet peer and when to declare it dead (Galène's numbers).

Reverse proxies cut idle connections at about 60 s, so a side that has heard nothing for
``PING_AFTER_S`` sends a ping, and one that has heard nothing for ``DEAD_AFTER_S`` gives
up on the connection.  Both sides run the same rule.
"""

PING_AFTER_S = 20.0
DEAD_AFTER_S = 45.0

OK = "ok"
PING = "ping"
DEAD = "dead"


class Liveness:
    def __init__(
        self, now: float, ping_after: float = PING_AFTER_S, dead_after: float = DEAD_AFTER_S
    ) -> None:
        self.ping_after = ping_after
        self.dead_after = dead_after
        self.last_heard = now
        self._pinged = False

    def heard(self, now: float) -> None:
        self.last_heard = now
        self._pinged = False

    def tick(self, now: float) -> str:
        quiet = now - self.last_heard
        if quiet >= self.dead_after:
            return DEAD
        if quiet >= self.ping_after and not self._pinged:
            self._pinged = True
            return PING
        return OK
