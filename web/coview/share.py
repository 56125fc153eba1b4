"""The life of one screen share, as a sans-I/O state machine.

The server owns the authoritative instance; browsers mirror its ``share_state``
messages.  The machine speaks of a *sharer* and *viewers*, never of visitors and agents,
so the same code serves a visitor showing their screen to an agent, an agent showing
theirs to a visitor, and a presenter sharing to a meeting.

Feed it events with ``now`` (seconds, any monotonic origin) and drain ``actions()``:
``("state", state, reason)`` each time the state changes.
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
KEY_LOCKED = "key_locked"  # the key a phone caller types was locked by wrong attempts

# Default deadlines, seconds.
REQUEST_TIMEOUT_S = 120.0
OPEN_TIMEOUT_S = 60.0
PICK_TIMEOUT_S = 300.0

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

    def tick(self, now: float) -> None:
        limit = self.timeouts.get(self.state)
        # Compare with the same sum deadline() returns: ``now - since >= limit`` can be
        # False at ``now == since + limit`` through float rounding (0.7 + 0.1 - 0.7 < 0.1).
        if limit is not None and now >= self.since + limit[0]:
            self._end(limit[1], now)

    def deadline(self) -> "float | None":
        """When ``tick`` next has something to do, so callers can sleep until then."""
        limit = self.timeouts.get(self.state)
        return None if limit is None else self.since + limit[0]

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
        self.reason = reason
        self.state = ENDED
        self.since = now
        self.history.append(ENDED)
        self._actions.append(("state", ENDED, reason))
