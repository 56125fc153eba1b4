"""One ``RTCPeerConnection`` driven by :class:`coview.negotiation.Negotiation`.

The core decides; this shell performs: it runs the core's actions one at a time, in
order (a description must be set before the candidates that follow it), and feeds the
browser's events back.  JavaScript names stay visible here and nowhere above.
"""

import asyncio

import js

from coview.negotiation import CLOSED, FAILED, Negotiation, NegotiationError
from coview_web import ffi


def _candidate_dict(cand):
    return {
        "candidate": str(cand.candidate),
        "sdpMid": None if ffi.is_none(cand.sdpMid) else str(cand.sdpMid),
        "sdpMLineIndex": None if ffi.is_none(cand.sdpMLineIndex) else int(cand.sdpMLineIndex),
        "usernameFragment": None
        if ffi.is_none(ffi.prop(cand, "usernameFragment"))
        else str(cand.usernameFragment),
    }


class Peer:
    def __init__(
        self,
        pc_id,
        role,
        ice_servers,
        send,
        stream=None,
        on_track=None,
        on_state=None,
        on_failed=None,
        ice_policy="all",
    ):
        self.id = pc_id
        self.neg = Negotiation(pc_id, role, report=True)  # peer_status: the relay fallback
        self.send = send
        self.on_track = on_track
        self.on_state = on_state
        self.on_failed = on_failed
        self.closed = False
        self._queue = []
        self._pumping = False
        self._clock = None  # the task ticking the core while ICE is down
        self.ice_policy = ice_policy
        self.pc = js.RTCPeerConnection.new(ffi.to_js(self._config(ice_servers)))
        ffi.add_listener(self.pc, "icecandidate", self._on_candidate)
        ffi.add_listener(self.pc, "connectionstatechange", self._on_connection_state)
        ffi.add_listener(self.pc, "track", self._on_track)
        if stream is not None:
            tracks = stream.getTracks()
            for i in range(ffi.length(tracks)):
                self.pc.addTrack(tracks[i], stream)
        else:
            self.pc.addTransceiver("video", ffi.to_js({"direction": "recvonly"}))

    # -- inputs -------------------------------------------------------------------------

    def start(self):
        self.neg.start()
        self._pump()

    def remote(self, msg):
        try:
            self.neg.remote_message(msg)
        except NegotiationError as exc:
            js.console.warn("coview: " + exc.text)
        self._pump()

    def set_ice(self, ice_servers):
        """Fresh TURN credentials (``peer_ice``): the next ICE restart allocates with them."""
        try:
            self.pc.setConfiguration(ffi.to_js(self._config(ice_servers)))
        except Exception as exc:
            js.console.warn("coview: setConfiguration failed: " + ffi.js_error_text(exc))

    def _config(self, ice_servers):
        config = {"iceServers": ice_servers}
        if self.ice_policy == "relay":
            config["iceTransportPolicy"] = "relay"  # TURN only (welcome.info)
        return config

    def replace_track(self, track):
        senders = self.pc.getSenders()
        for i in range(ffi.length(senders)):
            sender = senders[i]
            if not ffi.is_none(sender.track) or True:
                sender.replaceTrack(track)

    def tick(self, now):
        self.neg.tick(now)
        self._pump()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.neg.close()
        self.neg.actions()
        self.pc.close()

    # -- browser events -----------------------------------------------------------------

    def _on_candidate(self, event):
        cand = event.candidate
        if ffi.is_none(cand) or not str(cand.candidate):
            return  # end of candidates: nothing to forward
        self.neg.local_candidate(_candidate_dict(cand))
        self._pump()

    def _on_connection_state(self, event):
        state = str(self.pc.connectionState)
        self.neg.connection_state(state, ffi.now_ms() / 1000.0)
        self._pump()
        if state in ("disconnected", "failed") and self._clock is None and not self.closed:
            self._clock = asyncio.create_task(self._tick_while_down())

    async def _tick_while_down(self):
        """Tick the core until ICE is back (or given up): the restart deadlines must run out
        in every page, and the share window has no other clock."""
        try:
            while not self.closed and self.neg.state not in (FAILED, CLOSED):
                if str(self.pc.connectionState) == "connected":
                    break
                await asyncio.sleep(0.5)
                if not self.closed:
                    self.tick(ffi.now_ms() / 1000.0)
        finally:
            self._clock = None

    def _on_track(self, event):
        if self.on_track is None:
            return
        streams = event.streams
        if ffi.length(streams) > 0:
            self.on_track(streams[0])
        else:
            self.on_track(js.MediaStream.new(ffi.to_js([event.track])))

    # -- running the core's actions -----------------------------------------------------

    def _pump(self):
        self._queue.extend(self.neg.actions())
        if not self._pumping and self._queue:
            self._pumping = True
            asyncio.create_task(self._run())

    async def _run(self):
        try:
            while self._queue and not self.closed:
                action = self._queue.pop(0)
                try:
                    await self._do(action)
                except Exception as exc:  # a browser refusal must not stop the queue
                    js.console.warn("coview: " + action[0] + " failed: " + ffi.js_error_text(exc))
                self._queue.extend(self.neg.actions())
        finally:
            self._pumping = False

    async def _do(self, action):
        name = action[0]
        if name == "send":
            self.send(action[1])
        elif name == "create_offer":
            offer = await self.pc.createOffer(ffi.to_js({"iceRestart": bool(action[1])}))
            await self.pc.setLocalDescription(offer)
            self.neg.local_description("offer", str(self.pc.localDescription.sdp))
        elif name == "create_answer":
            answer = await self.pc.createAnswer()
            await self.pc.setLocalDescription(answer)
            self.neg.local_description("answer", str(self.pc.localDescription.sdp))
        elif name == "set_remote":
            await self.pc.setRemoteDescription(ffi.to_js({"type": action[1], "sdp": action[2]}))
            self.neg.remote_description_set()
        elif name == "add_candidate":
            if action[1] is not None:
                await self.pc.addIceCandidate(ffi.to_js(action[1]))
        elif name == "state":
            if self.on_state is not None:
                self.on_state(action[1])
        elif name == "failed":
            if self.on_failed is not None:
                self.on_failed(action[1])
