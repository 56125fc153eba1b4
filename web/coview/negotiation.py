"""WebRTC offer/answer for one peer connection, as a sans-I/O state machine.

Roles are fixed by the server per peer connection (``pc``): the side that has the media
is the *offerer*, so there is no glare.  Either side may be the sharer; the machine does
not know who is a visitor.

The browser shell executes the actions on a real ``RTCPeerConnection`` and reports back:

* actions: ``("create_offer", ice_restart)``, ``("set_remote", kind, sdp)``,
  ``("create_answer",)``, ``("add_candidate", candidate)``, ``("send", message)``,
  ``("failed", reason)``, ``("state", state)``;
* events: ``start``, ``local_description``, ``local_candidate``, ``remote_message``,
  ``remote_description_set``, ``connection_state``, ``tick``, ``close``.

Rules encoded here (Galène's Stream, aiortc's non-trickle peers):
local candidates are held until our description has been sent; remote candidates are
held until the remote description is set; a failed or long-disconnected connection is
ICE-restarted by the offerer (the answerer asks for it) a bounded number of times, then
reported ``failed`` so the caller can fall back to the relay.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OFFERER = "offerer"
ANSWERER = "answerer"

NEW = "new"
OFFERING = "offering"  # creating our offer / waiting for the answer
ANSWERING = "answering"  # applying their offer / creating our answer
CONNECTING = "connecting"  # descriptions exchanged, ICE working
CONNECTED = "connected"
RESTARTING = "restarting"
FAILED = "failed"
CLOSED = "closed"

DISCONNECTED_GRACE_S = 4.0  # "disconnected" this long triggers a restart
MAX_RESTARTS = 2
_DOWN = ("disconnected", "failed")  # connection states that count as ICE being down


class NegotiationError(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Negotiation:
    def __init__(
        self, pc: str, role: str, max_restarts: int = MAX_RESTARTS, report: bool = False
    ) -> None:
        """``report``: also send ``peer_status`` when ICE connects and when it gives up, so
        the server can fall back to its media relay (``docs/protocol.md``, Path selection)."""
        if role not in (OFFERER, ANSWERER):
            raise ValueError("role must be offerer or answerer")
        self.pc = pc
        self.role = role
        self.state = NEW
        self.history = [NEW]
        self.max_restarts = max_restarts
        self.report = report
        self.restarts = 0
        self._sent_description = False
        self._remote_set = False
        self._awaiting_answer = False
        self._local_pending: list[Any] = []
        self._remote_pending: list[Any] = []
        self._disconnected_since: float | None = None
        self._ice = NEW  # the last connectionState the shell reported
        self._actions: list[tuple[Any, ...]] = []

    # -- events from the shell ----------------------------------------------------------

    def start(self) -> None:
        """The offerer has its media attached and may offer."""
        if self.role != OFFERER:
            return
        if self.state != NEW:
            return
        self._go(OFFERING)
        self._actions.append(("create_offer", False))

    def local_description(self, kind: str, sdp: str) -> None:
        """Our description is set locally: send it, then the candidates held back."""
        if self.state == CLOSED:
            return
        self._actions.append(("send", {"type": kind, "pc": self.pc, "sdp": sdp}))
        self._sent_description = True
        if kind == "offer":
            self._awaiting_answer = True
        else:
            self._go(CONNECTING)
        pending = self._local_pending
        self._local_pending = []
        for cand in pending:
            self._send_candidate(cand)

    def local_candidate(self, candidate: "Any") -> None:
        if self.state == CLOSED:
            return
        if self._sent_description:
            self._send_candidate(candidate)
        else:
            self._local_pending.append(candidate)

    def remote_message(self, msg: "dict[str, Any]") -> None:
        """An ``offer``, ``answer``, ``ice`` or ``restart`` for this pc from the peer."""
        mtype = msg.get("type")
        if self.state == CLOSED:
            return
        if mtype == "offer":
            if self.role != ANSWERER:
                raise NegotiationError("out_of_order", "the offerer received an offer")
            self._remote_set = False
            self._sent_description = False
            self._go(ANSWERING)
            self._actions.append(("set_remote", "offer", msg["sdp"]))
            self._actions.append(("create_answer",))
        elif mtype == "answer":
            if self.role != OFFERER or not self._awaiting_answer:
                raise NegotiationError("out_of_order", "an answer arrived with no offer pending")
            self._awaiting_answer = False
            self._remote_set = False  # a restart's answer replaces the remote description
            self._actions.append(("set_remote", "answer", msg["sdp"]))
            self._go(CONNECTING)
        elif mtype == "ice":
            cand = msg.get("candidate")
            if self._remote_set:
                self._actions.append(("add_candidate", cand))
            else:
                self._remote_pending.append(cand)
        elif mtype == "restart":
            if self.role == OFFERER and not self._restart_in_grace():
                self._restart(requested=True)
        else:
            raise NegotiationError("unknown_type", "not a negotiation message")

    def remote_description_set(self) -> None:
        self._remote_set = True
        pending = self._remote_pending
        self._remote_pending = []
        for cand in pending:
            self._actions.append(("add_candidate", cand))

    def connection_state(self, state: str, now: float) -> None:
        """``RTCPeerConnection.connectionState`` changed."""
        if self.state in (CLOSED, FAILED):
            return
        self._ice = state
        if state == "connected":
            self._disconnected_since = None
            if self.state != CONNECTED:
                self._go(CONNECTED)
                self._report(CONNECTED)
        elif state == "disconnected":
            if self._disconnected_since is None:
                self._disconnected_since = now
        elif state == "failed":
            self._disconnected_since = None
            self._restart(requested=False)

    def tick(self, now: float) -> None:
        if self.state in (CLOSED, FAILED):
            return
        if self.state == CONNECTING and self._ice in _DOWN:
            # A restart's descriptions are exchanged and ICE is still down: the browser may
            # report nothing new until its ~30 s consent timeout, so the grace runs again.
            if self._disconnected_since is None:
                self._disconnected_since = now
        since = self._disconnected_since
        if since is not None and now - since >= DISCONNECTED_GRACE_S:
            self._disconnected_since = None
            self._restart(requested=False)

    def close(self) -> None:
        if self.state != CLOSED:
            self._local_pending = []
            self._remote_pending = []
            self._go(CLOSED)

    # -- output -------------------------------------------------------------------------

    def actions(self) -> "list[tuple[Any, ...]]":
        out = self._actions
        self._actions = []
        return out

    # -- internals ----------------------------------------------------------------------

    def _send_candidate(self, candidate: "Any") -> None:
        self._actions.append(("send", {"type": "ice", "pc": self.pc, "candidate": candidate}))

    def _restart_in_grace(self) -> bool:
        """Our last restart's descriptions are exchanged and its grace runs (ICE still down):
        a request crossing it is for the same outage, and the grace restarts by itself."""
        return self.state == CONNECTING and self.restarts > 0 and self._ice in _DOWN

    def _restart(self, requested: bool) -> None:
        # One restart at a time: both ends usually see the same failure, and a second
        # offer crossing the first leaves an answer with no offer.  Failed is final.
        if self.state in (RESTARTING, FAILED):
            return
        if self.restarts >= self.max_restarts:
            self._go(FAILED)
            self._actions.append(("failed", "ice"))
            self._report(FAILED)
            return
        self.restarts += 1
        self._disconnected_since = None  # a new grace once this restart is exchanged
        self._go(RESTARTING)
        if self.role == OFFERER:
            self._sent_description = False
            self._actions.append(("create_offer", True))
        elif not requested:
            self._actions.append(("send", {"type": "restart", "pc": self.pc}))

    def _report(self, state: str) -> None:
        if self.report:
            self._actions.append(("send", {"type": "peer_status", "pc": self.pc, "state": state}))

    def _go(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.history.append(state)
            self._actions.append(("state", state))
