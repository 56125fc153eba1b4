"""The browser's end of the signaling socket: handshake, codec, liveness, reconnect.

It knows the protocol but not the page: decoded messages go to ``on_message``, and the
socket's life to ``on_status``: "connecting", "open", "reconnecting" (lost; trying again
on the core's :class:`~coview.reconnect.Backoff` schedule) and "closed" (for good: the
server refused us, or the page closed the channel).  Messages sent while the socket is
not open wait in order and go out after the next ``welcome``; a share window resumes
with the credential its last ``welcome`` gave (docs/protocol.md, Reconnect and resume).
"""

import js

from coview import protocol as P
from coview.liveness import DEAD, PING, Liveness
from coview.reconnect import Backoff
from coview_web import ffi


class Channel:
    def __init__(self, role, token=None, on_message=None, on_status=None):
        self.role = role
        self.token = token
        self.on_message = on_message
        self.on_status = on_status
        self.ws = None
        self.is_open = False
        self.closed_by_us = False
        self.welcome = None
        self._outbox = []
        self._live = None
        self._timer = None
        self._retry = None
        self._listeners = []
        self.resume = None  # a share window's resume credential (welcome.info.resume)
        self.backoff = Backoff(lambda: float(js.Math.random()))
        self.welcomes = 0

    def connect(self):
        loc = js.window.location
        scheme = "wss:" if str(loc.protocol) == "https:" else "ws:"
        for unsubscribe in self._listeners:  # the previous socket's, if any
            unsubscribe()
        self.ws = js.WebSocket.new(scheme + "//" + str(loc.host) + "/ws")
        self._listeners = [
            ffi.add_listener(self.ws, "open", self._opened),
            ffi.add_listener(self.ws, "message", self._received),
            ffi.add_listener(self.ws, "close", self._closed),
        ]
        self._status("connecting" if self.welcomes == 0 else "reconnecting")

    def send(self, msg):
        if self.is_open and self.welcome is not None:
            self.ws.send(P.encode(msg))
        else:
            self._outbox.append(msg)

    def close(self):
        self.closed_by_us = True
        if self._retry is not None:
            ffi.clear_timeout(self._retry)
            self._retry = None
        if self.ws is not None:
            self.ws.close(1000)

    @property
    def reconnected(self):
        """True from the second ``welcome`` on: the page resumes rather than starts."""
        return self.welcomes > 1

    # -- socket events ------------------------------------------------------------------

    def _opened(self, event):
        self.is_open = True
        hello = P.make("handshake", versions=list(P.SUPPORTED_VERSIONS), role=self.role)
        if self.resume:
            hello["resume"] = self.resume
        elif self.token:
            hello["token"] = self.token
        self.ws.send(P.encode(hello))
        self._live = Liveness(ffi.now_ms() / 1000.0)
        self._timer = ffi.set_interval(self._tick, 5000)

    def _received(self, event):
        now = ffi.now_ms() / 1000.0
        if self._live is not None:
            self._live.heard(now)
        try:
            msg = P.decode(str(event.data), P.S2C)
        except P.ProtocolError as exc:
            js.console.warn("coview: dropped a bad message from the server: " + exc.text)
            return
        mtype = msg["type"]
        if mtype == "ping":
            self.ws.send(P.encode(P.make("pong", t=msg.get("t"))))
            return
        if mtype == "pong":
            return
        if mtype == "error" and msg.get("fatal"):
            self.backoff.refused()  # signed out, link used, share ended: never retry
        if mtype == "welcome":
            self.welcome = msg
            self.welcomes += 1
            self.backoff.opened(now)
            info = msg["info"]
            if info.get("resume"):
                self.resume = info["resume"]
            if self.role == "visitor" and info.get("token"):
                self.token = info["token"]  # a new visitor: come back as the same one
            pending = self._outbox
            self._outbox = []
            for queued in pending:
                self.ws.send(P.encode(queued))
            self._status("open")
        if self.on_message is not None:
            self.on_message(msg)

    def _closed(self, event):
        self.is_open = False
        self.welcome = None
        if self._timer is not None:
            ffi.clear_interval(self._timer)
            self._timer = None
        code = ffi.prop(event, "code")
        delay = self.backoff.closed(
            ffi.now_ms() / 1000.0, None if ffi.is_none(code) else int(code), self.closed_by_us
        )
        if delay is None:
            self._status("closed")
            return
        self._status("reconnecting")
        self._retry = ffi.set_timeout(self._reconnect, delay * 1000.0)

    def _reconnect(self):
        self._retry = None
        if not self.closed_by_us:
            self.connect()

    def _tick(self, *args):
        if self._live is None or not self.is_open:
            return
        verdict = self._live.tick(ffi.now_ms() / 1000.0)
        if verdict == PING:
            self.ws.send(P.encode(P.make("ping")))
        elif verdict == DEAD:
            self.ws.close(4000)

    def _status(self, status):
        if self.on_status is not None:
            self.on_status(status)
