"""The life of one screen share, as a sans-I/O state machine.

The server owns the authoritative instance; browsers mirror its ``share_state``
messages.  The machine speaks of a *sharer* and *viewers*, never of visitors and agents,
so the same code serves a visitor showing their screen to an agent, an agent showing
theirs to a visitor, and a presenter sharing to a meeting.

Feed it events with ``now`` (seconds, any monotonic origin) and drain ``actions()``:
``("state", state, reason)`` each time the state changes, ``("away", party, bool)`` each
time a party's connection is lost or found again.

A party whose signaling connection dropped is *away*, not gone: media may still flow
between the pages while signaling is down (a server restart, a Wi-Fi blink, an agent
reloading their tab), so the share keeps its state until the party is found again or
``resume_timeout`` passes; only then does it end, with the reason given when it was lost.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

REQUESTED = "requested"  # asked; the sharer has not answered yet
ACCEPTED = "accepted"  # the sharer said yes; their share window is opening
WAITING = "waiting"  # the share window is open; waiting for the sharer's pick
LIVE = "live"  # the sharer picked a surface and media is being sent
ENDED = "ended"

STATES = (REQUESTED, ACCEPTED, WAITING, LIVE, ENDED)

# Why a share ended (stable codes; the UI maps them to words).
DECLINED = "declined"
STOPPED_BY_SHARER = "stopped_by_sharer"
STOPPED_BY_VIEWER = "stopped_by_viewer"
SHARER_LEFT = "sharer_left"  # the share window was closed or reloaded
VIEWER_LEFT = "viewer_left"  # the last viewer went away
REQUESTER_LEFT = "requester_left"  # the person who asked for the share left
REQUEST_TIMEOUT = "request_timeout"
OPEN_TIMEOUT = "open_timeout"
PICK_TIMEOUT = "pick_timeout"
SERVER_SHUTDOWN = "server_shutdown"
SHARER_LOST = "sharer_lost"  # the share window's connection dropped and did not come back
KEY_LOCKED = "key_locked"  # the key a phone caller types was locked by wrong attempts

# Default deadlines, seconds.
REQUEST_TIMEOUT_S = 120.0
OPEN_TIMEOUT_S = 60.0
PICK_TIMEOUT_S = 300.0
RESUME_TIMEOUT_S = 20.0

SHARER = "sharer"
VIEWER = "viewer"
PARTIES = (SHARER, VIEWER)

_TRANSITIONS = {
    REQUESTED: (ACCEPTED, WAITING, ENDED),
    ACCEPTED: (WAITING, ENDED),
    WAITING: (LIVE, ENDED),
    LIVE: (WAITING, ENDED),
    ENDED: (),
}


class ShareError(Exception):
    """An event that the current state does not allow; ``code`` is a protocol code."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class ShareSession:
    def __init__(
        self,
        now: float,
        state: str = REQUESTED,
        request_timeout: float = REQUEST_TIMEOUT_S,
        open_timeout: float = OPEN_TIMEOUT_S,
        pick_timeout: float = PICK_TIMEOUT_S,
        resume_timeout: float = RESUME_TIMEOUT_S,
    ) -> None:
        if state not in STATES:
            raise ValueError("unknown share state " + state)
        self.state = state
        self.reason: str | None = None
        self.surface: str | None = None
        self.history = [state]
        self.since = now
        self.timeouts = {
            REQUESTED: (request_timeout, REQUEST_TIMEOUT),
            ACCEPTED: (open_timeout, OPEN_TIMEOUT),
            WAITING: (pick_timeout, PICK_TIMEOUT),
        }
        self.resume_timeout = resume_timeout
        #: party -> (since, the end reason should it not come back)
        self.away: dict[str, tuple[float, str]] = {}
        self._actions: list[tuple[Any, ...]] = []

    # -- events -------------------------------------------------------------------------

    def accept(self, now: float) -> None:
        self._need((REQUESTED,), "accept")
        self._go(ACCEPTED, now)

    def decline(self, now: float) -> None:
        self._need((REQUESTED, ACCEPTED), "decline")
        self._end(DECLINED, now)

    def sharer_joined(self, now: float) -> None:
        """The share window connected.  Joining from ``requested`` implies acceptance."""
        self._need((REQUESTED, ACCEPTED), "open the share window")
        self._go(WAITING, now)

    def media_started(self, surface: str, now: float) -> None:
        self._need((WAITING, LIVE), "start media")
        self.surface = surface
        if self.state == LIVE:  # the sharer switched surface: report, stay live
            self._actions.append(("state", LIVE, None))
            return
        self._go(LIVE, now)

    def media_stopped(self, now: float) -> None:
        """The capture ended while the share window stays open (e.g. a re-pick)."""
        self._need((LIVE,), "stop media")
        self._go(WAITING, now)

    def stop(self, by_sharer: bool, now: float) -> None:
        self._need((REQUESTED, ACCEPTED, WAITING, LIVE), "stop")
        self._end(STOPPED_BY_SHARER if by_sharer else STOPPED_BY_VIEWER, now)

    def end(self, reason: str, now: float) -> None:
        """End for a reason outside the two parties' buttons (someone left, shutdown)."""
        if self.state != ENDED:
            self._end(reason, now)

    def lost(self, party: str, reason: str, now: float) -> None:
        """``party``'s connection dropped: wait ``resume_timeout`` for it, then end."""
        if party not in PARTIES:
            raise ValueError("unknown party " + party)
        if self.state == ENDED or party in self.away:
            return
        self.away[party] = (now, reason)
        self._actions.append(("away", party, True))

    def found(self, party: str, now: float) -> None:
        """``party`` is connected again: the share goes on as it was."""
        if self.state != ENDED and self.away.pop(party, None) is not None:
            self._actions.append(("away", party, False))

    def tick(self, now: float) -> None:
        # Compare with the same sums deadline() returns: ``now - since >= limit`` can be
        # False at ``now == since + limit`` through float rounding (0.7 + 0.1 - 0.7 < 0.1).
        for party in PARTIES:
            lost = self.away.get(party)
            if lost is not None and now >= lost[0] + self.resume_timeout:
                self._end(lost[1], now)
                return
        limit = self.timeouts.get(self.state)
        if limit is not None and now >= self.since + limit[0]:
            self._end(limit[1], now)

    def deadline(self) -> "float | None":
        """When ``tick`` next has something to do, so callers can sleep until then."""
        if self.state == ENDED:
            return None
        limit = self.timeouts.get(self.state)
        times = [self.since + limit[0]] if limit is not None else []
        for party in PARTIES:
            lost = self.away.get(party)
            if lost is not None:
                times.append(lost[0] + self.resume_timeout)
        return min(times) if times else None

    # -- output -------------------------------------------------------------------------

    def actions(self) -> "list[tuple[Any, ...]]":
        out = self._actions
        self._actions = []
        return out

    @property
    def ended(self) -> bool:
        return self.state == ENDED

    # -- internals ----------------------------------------------------------------------

    def _need(self, states: "tuple[str, ...]", what: str) -> None:
        if self.state == ENDED:
            raise ShareError("ended", "this share has ended")
        if self.state not in states:
            raise ShareError("out_of_order", "cannot " + what + " while " + self.state)

    def _go(self, state: str, now: float) -> None:
        if state not in _TRANSITIONS[self.state]:  # pragma: no cover - guarded by _need
            raise ShareError("out_of_order", self.state + " -> " + state)
        self.state = state
        self.since = now
        self.history.append(state)
        self._actions.append(("state", state, None))

    def _end(self, reason: str, now: float) -> None:
        self.away = {}
        self.reason = reason
        self.state = ENDED
        self.since = now
        self.history.append(ENDED)
        self._actions.append(("state", ENDED, reason))
