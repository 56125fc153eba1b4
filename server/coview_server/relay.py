"""The server-side WebRTC end of relayed shares: one publisher in, many subscribers out.

The hub treats a :class:`Relay` as one more protocol client (role ``relay``): it sends
the relay ``peer``, ``peer_gone``, ``offer``, ``answer``, ``ice`` and ``restart``
messages, and routes what the relay emits (``offer``/``answer``/``ice``/``restart``
and ``peer_status``) by ``pc``.  Each peer connection is an aiortc
``RTCPeerConnection`` driven by :class:`coview.negotiation.Negotiation`, exactly as
``web/coview_web/peer.py`` drives the browser's (:class:`AiortcPeer`).

* ``peer`` with role ``answerer``: a **publisher** — the sharer's browser offers its screen
  video for the share, the relay answers and receives it.
* ``peer`` with role ``offerer``: a **subscriber** — the relay offers the share's video to
  one viewer, as soon as the share has a publisher sending.

**Forwarding** (the default): aiortc would decode the publisher's video and re-encode it
for every subscriber (a quarter to two thirds of a core per 1080p30 stream).  Instead the
publisher's receiver hands its reassembled encoded frames (VP8 or H264) straight to the
subscribers' senders, which only re-packetize them (``Encoder.pack``); subscribers
negotiate the publisher's codec (``setCodecPreferences``), start at a keyframe, and
their keyframe requests (PLI/FIR) go to the publisher.  The aiortc private API this
needs lives in :mod:`coview_server.aiortc_internals`.  With ``forward=False``, or when
those internals changed, the relay uses aiortc's ordinary path: decode, ``MediaRelay``,
one encoder per subscriber.

aiortc cannot ICE-restart (``createOffer`` has no ``iceRestart`` and an ICE transport
starts once), so relay peer connections run ``Negotiation`` with no restarts: a
connection that fails is reported ``peer_status`` ``failed`` at once and the hub may
replace it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.sdp import SessionDescription, candidate_from_sdp

from coview import protocol as P
from coview.negotiation import (
    ANSWERER,
    CLOSED,
    CONNECTED,
    FAILED,
    OFFERER,
    Negotiation,
    NegotiationError,
)

from . import aiortc_internals as internals

log = logging.getLogger("coview.relay")

#: Codecs the relay can forward without decoding (aiortc packetizes both from bytes).
FORWARDABLE = ("video/vp8", "video/h264")
#: A subscriber more than this many frames behind is flushed and restarts at a keyframe.
MAX_QUEUED_FRAMES = 60
#: Keyframe requests to a publisher are at least this far apart (they are coalesced).
KEYFRAME_MIN_INTERVAL_S = 0.25
#: A subscriber still waiting for a keyframe asks again this often.
KEYFRAME_RETRY_S = 1.0
#: RTP ticks inserted between two publishers' streams on one subscriber (1/30 s).
GAP_TICKS = 3000
#: A peer connection not connected this long after negotiation began is reported failed.
#: aioice reports an ICE failure only after end-of-candidates, which browsers that trickle
#: may never send; without this a dead relay pc would stay "connecting" for ever.
CONNECT_TIMEOUT_S = 30.0


# --- helpers ------------------------------------------------------------------------------


def ice_configuration(ice_servers: Sequence[Any] | None) -> RTCConfiguration:
    """``peer.ice_servers`` (browser ``iceServers`` dicts) as aiortc configuration.

    Never ``iceServers=None``: aiortc would then use a public Google STUN server.  URLs
    aiortc cannot parse are left out (aiortc itself uses one STUN and one TURN server).
    """
    servers: list[RTCIceServer] = []
    for entry in ice_servers or ():
        if not isinstance(entry, dict):
            continue
        urls = entry.get("urls")
        url_list = [urls] if isinstance(urls, str) else urls if isinstance(urls, list) else []
        good = []
        for url in url_list:
            try:
                if isinstance(url, str):
                    parse_stun_turn_uri(url)
                    good.append(url)
            except ValueError:
                log.warning("relay: ignoring ICE server URL %r", url)
        if not good:
            continue
        username = entry.get("username")
        credential = entry.get("credential")
        servers.append(
            RTCIceServer(
                urls=good,
                username=username if isinstance(username, str) else None,
                credential=credential if isinstance(credential, str) else None,
            )
        )
    return RTCConfiguration(iceServers=servers)


def candidate_from_json(value: dict[str, Any] | None) -> RTCIceCandidate | None:
    """``RTCIceCandidate.toJSON()`` as aiortc's candidate; None (or "") ends the candidates."""
    if value is None:
        return None
    text = value.get("candidate")
    if not isinstance(text, str):
        raise ValueError("candidate.candidate must be a string")
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    if not text.strip():
        return None
    if len(text.split()) < 8:
        raise ValueError("malformed candidate")
    candidate = candidate_from_sdp(text)
    mid = value.get("sdpMid")
    index = value.get("sdpMLineIndex")
    candidate.sdpMid = mid if isinstance(mid, str) else None
    candidate.sdpMLineIndex = index if isinstance(index, int) else None
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    return candidate


def is_keyframe(codec: RTCRtpCodecParameters, data: bytes) -> bool:
    """Whether a depayloaded frame starts a decodable picture."""
    mime = codec.mimeType.lower()
    if mime == "video/vp8":
        # RFC 6386 9.1: frame tag bit 0 is 0 for key frames, then start code 9d 01 2a.
        return len(data) >= 10 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"
    if mime == "video/h264":
        # Annex B from aiortc's depayloader: look for an IDR slice (NAL type 5).
        pos = data.find(b"\x00\x00\x01")
        while pos != -1 and pos + 3 < len(data):
            if data[pos + 3] & 0x1F == 5:
                return True
            pos = data.find(b"\x00\x00\x01", pos + 3)
        return False
    return True


def _capability(codec: RTCRtpCodecParameters) -> RTCRtpCodecCapability | None:
    caps = RTCRtpSender.getCapabilities("video").codecs
    mime = codec.mimeType.lower()
    for cap in caps:
        if cap.mimeType.lower() == mime and cap.parameters == codec.parameters:
            return cap
    for cap in caps:
        if cap.mimeType.lower() == mime:
            return cap
    return None


def _with_rtx(preferred: list[RTCRtpCodecCapability]) -> list[RTCRtpCodecCapability]:
    rtx = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.name.lower() == "rtx"]
    return preferred + rtx[:1]


def forwardable_preferences() -> list[RTCRtpCodecCapability]:
    """VP8 first (what browsers offer first), then H264, then RTX."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for mime in FORWARDABLE for c in caps if c.mimeType.lower() == mime]
    return _with_rtx(ordered)


def _primary_ssrc(sdp: str | None) -> int | None:
    """The media SSRC of the video section: first of its FID group, else its first ``a=ssrc``."""
    if not sdp:
        return None
    try:
        description = SessionDescription.parse(sdp)
    except Exception:
        return None
    for media in description.media:
        if media.kind != "video":
            continue
        for group in media.ssrc_group:
            if group.semantic == "FID" and group.items:
                return int(group.items[0])
        if media.ssrc:
            return int(media.ssrc[0].ssrc)
    return None


# --- one peer connection ---------------------------------------------------------------------


class AiortcPeer:
    """One aiortc ``RTCPeerConnection`` driven by :class:`Negotiation`.

    The server twin of ``web/coview_web/peer.py``: the core decides, this shell runs its
    actions one at a time, in order, in one task, and feeds aiortc's events back.  aiortc
    does not trickle: its candidates are in its SDP once the local description is set,
    so ``local_candidate`` is never fed; trickled remote candidates are added.

    ``host_addresses``: gather host candidates only on these (see
    :func:`aiortc_internals.host_addresses`).  Test and bench peers use it too.
    """

    def __init__(
        self,
        pc_id: str,
        role: str,
        ice_servers: Sequence[Any] | None,
        send: Callable[[dict[str, Any]], None],
        *,
        host_addresses: Sequence[str] = (),
        max_restarts: int = 0,
        on_state: Callable[[str], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
    ) -> None:
        self.id = pc_id
        self.role = role
        self.neg = Negotiation(pc_id, role, max_restarts=max_restarts)
        self.send = send
        self.host_addresses = tuple(host_addresses)
        self.on_state = on_state
        self.on_failed = on_failed
        self.closed = False
        self.pc = RTCPeerConnection(ice_configuration(ice_servers))
        self.pc.on("connectionstatechange", self._on_connection_state)
        self._queue: deque[tuple[Any, ...]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._connect_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        """A task is running this peer's actions."""
        return self._task is not None

    # -- inputs -------------------------------------------------------------------------

    def start(self) -> None:
        """The offerer has its media attached: offer."""
        self.neg.start()
        self._pump()

    def remote(self, msg: dict[str, Any]) -> None:
        """``offer``, ``answer``, ``ice`` or ``restart`` from the other end."""
        if self.closed:
            return
        try:
            self.neg.remote_message(msg)
        except NegotiationError as exc:
            log.info("relay: pc %s: %s (%s)", self.id, exc.text, exc.code)
        self._pump()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._disarm()
        self.neg.close()
        self.neg.actions()
        self._queue.clear()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except BaseException:  # cancelled, or a failure already logged
                pass
        self._task = None
        try:
            await self.pc.close()
        except Exception:
            log.exception("relay: closing pc %s failed", self.id)

    # -- aiortc events ------------------------------------------------------------------

    def _on_connection_state(self) -> None:
        if self.closed:
            return
        self.neg.connection_state(self.pc.connectionState, time.monotonic())
        self._pump()

    # -- running the core's actions -----------------------------------------------------

    def _pump(self) -> None:
        self._queue.extend(self.neg.actions())
        if self._task is None and self._queue and not self.closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"coview-relay-pc-{self.id}"
            )

    async def _run(self) -> None:
        try:
            while self._queue and not self.closed:
                action = self._queue.popleft()
                try:
                    await self._do(action)
                except Exception as exc:  # an aiortc refusal must not stop the queue
                    self._action_failed(action, exc)
                self._queue.extend(self.neg.actions())
        finally:
            self._task = None

    def _action_failed(self, action: tuple[Any, ...], exc: Exception) -> None:
        if self.closed:
            return
        name = action[0]
        log.warning("relay: pc %s: %s failed: %s: %s", self.id, name, type(exc).__name__, exc)
        if name in ("set_remote", "create_offer", "create_answer"):
            # No description, no connection: report it like a failed connection (with
            # no restarts left, Negotiation goes to failed and says so).  The answer that
            # would follow a refused offer is dropped.
            self._queue = deque(a for a in self._queue if a[0] != "create_answer")
            self.neg.connection_state("failed", time.monotonic())

    async def _do(self, action: tuple[Any, ...]) -> None:
        name = action[0]
        if name == "send":
            self._send(action[1])
        elif name == "create_offer":
            # aiortc has no ICE restart: a restart offer is a plain re-offer.
            offer = await self.pc.createOffer()
            with internals.host_addresses(self.host_addresses):
                await self.pc.setLocalDescription(offer)
            self.neg.local_description("offer", self.pc.localDescription.sdp)
        elif name == "create_answer":
            answer = await self.pc.createAnswer()
            with internals.host_addresses(self.host_addresses):
                await self.pc.setLocalDescription(answer)
            self.neg.local_description("answer", self.pc.localDescription.sdp)
        elif name == "set_remote":
            description = RTCSessionDescription(sdp=action[2], type=action[1])
            await self.pc.setRemoteDescription(description)
            self.neg.remote_description_set()
        elif name == "add_candidate":
            await self.pc.addIceCandidate(candidate_from_json(action[1]))
        elif name == "state":
            self._watch_connect(action[1])
            if self.on_state is not None:
                self.on_state(action[1])
        elif name == "failed":
            if self.on_failed is not None:
                self.on_failed(action[1])

    def _watch_connect(self, state: str) -> None:
        if state in (CONNECTED, FAILED, CLOSED):
            self._disarm()
        elif self._connect_timer is None and not self.closed:
            self._connect_timer = asyncio.get_running_loop().call_later(
                CONNECT_TIMEOUT_S, self._connect_timed_out
            )

    def _disarm(self) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.closed or self.neg.state in (CONNECTED, FAILED, CLOSED):
            return
        log.info("relay: pc %s not connected after %.0f s", self.id, CONNECT_TIMEOUT_S)
        self.neg.connection_state("failed", time.monotonic())
        self._pump()

    def _send(self, msg: dict[str, Any]) -> None:
        fields = {k: v for k, v in msg.items() if k != "type"}
        out = P.make(msg["type"], **fields)
        try:
            P.validate(out, P.C2S)
        except P.ProtocolError as exc:
            log.error("relay: pc %s: not sending an invalid %s: %s", self.id, msg["type"], exc)
            return
        self.send(out)


# --- subscriber tracks -----------------------------------------------------------------------


class _ForwardTrack(MediaStreamTrack):
    """A subscriber's video: the publisher's encoded frames as ``av.Packet``s.

    aiortc's sender packs (re-packetizes) packets instead of encoding frames.  Frames are
    taken only once the sender reads (its connection is up), starting at a keyframe, and
    a subscriber that falls behind is flushed and restarts at the next keyframe.
    """

    kind = "video"

    def __init__(self, share: _Share, codec: RTCRtpCodecParameters) -> None:
        super().__init__()
        self._share = share
        self.codec_mime = codec.mimeType.lower()
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue()
        self._reading = False
        self._need_key = True
        self._generation = share.generation
        self._offset: int | None = 0  # None: set at the next keyframe
        self._last_pts: int | None = None
        self.frames = 0

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._reading:
            self._reading = True
            self._share.request_keyframe("subscriber started")
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def push(
        self, codec: RTCRtpCodecParameters, frame: JitterFrame, key: Callable[[], bool]
    ) -> None:
        if not self._reading or self.readyState != "live":
            return
        if codec.mimeType.lower() != self.codec_mime:
            self._share.relay.counters["frames_codec_mismatch"] += 1
            return
        if self._generation != self._share.generation:
            self._generation = self._share.generation  # a new publisher: restart cleanly
            self._need_key = True
            self._offset = 0 if self._last_pts is None else None
        if self._need_key:
            if not key():
                self._share.keyframe_wanted()
                return
            self._need_key = False
            if self._offset is None and self._last_pts is not None:
                # Keep this subscriber's timestamps increasing across publishers.
                self._offset = self._last_pts + GAP_TICKS - frame.timestamp
        if self._queue.qsize() >= MAX_QUEUED_FRAMES:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._need_key = True
            self._share.relay.counters["subscriber_flushes"] += 1
            self._share.request_keyframe("subscriber behind")
            return
        packet = av.Packet(frame.data)
        pts = frame.timestamp + (self._offset or 0)
        packet.pts = pts
        packet.time_base = VIDEO_TIME_BASE
        self._last_pts = pts
        self._queue.put_nowait(packet)
        self.frames += 1
        self._share.relay.counters["frames_forwarded"] += 1

    def stop(self) -> None:
        super().stop()
        self._share.tracks.discard(self)
        self._queue.put_nowait(None)


class _ReencodeTrack(MediaStreamTrack):
    """A subscriber's video on aiortc's ordinary path: decoded frames from ``MediaRelay``.

    Follows the share's current publisher: when it goes, waits for the next one.
    """

    kind = "video"

    def __init__(self, share: _Share) -> None:
        super().__init__()
        self._share = share
        self._proxy: MediaStreamTrack | None = None
        self._generation = -1

    async def recv(self) -> Any:
        share = self._share
        while self.readyState == "live":
            if self._proxy is None or self._generation != share.generation:
                self._drop_proxy()
                source = share.decoded
                if source is None:
                    await share.changed.wait()
                    continue
                self._proxy = share.media_relay.subscribe(source, buffered=False)
                self._generation = share.generation
            generation = self._generation
            try:
                return await self._proxy.recv()
            except MediaStreamError:
                self._drop_proxy()
                if generation == share.generation:
                    await share.changed.wait()
        raise MediaStreamError

    def _drop_proxy(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None

    def stop(self) -> None:
        super().stop()
        self._drop_proxy()


# --- shares ----------------------------------------------------------------------------------


class _Publisher:
    def __init__(self, relay: Relay, share: _Share, peer: AiortcPeer) -> None:
        self.relay = relay
        self.share = share
        self.peer = peer
        self.receiver: RTCRtpReceiver | None = None
        self.forwarding = False
        self.ssrc: int | None = None
        self.drains: list[asyncio.Task[None]] = []
        self.has_track = False

    def on_track(self, track: MediaStreamTrack) -> None:
        transceiver = next(
            (t for t in self.peer.pc.getTransceivers() if t.receiver.track is track), None
        )
        if transceiver is None:
            return
        if track.kind != "video" or self.has_track:
            self._discard(transceiver.receiver, track)
            return
        self.has_track = True
        self.receiver = transceiver.receiver
        if self.relay.forward and internals.install_passthrough(
            transceiver.receiver, self._on_frame
        ):
            self.forwarding = True
            log.info("relay: share %s: publisher %s forwarded", self.share.id, self.peer.id)
        else:
            if self.relay.forward:
                log.warning("relay: share %s: cannot forward, re-encoding", self.share.id)
            self.share.set_decoded(self, track)
            self.drains.append(
                self.relay.spawn(
                    self._drain(self.share.media_relay.subscribe(track, buffered=False)),
                    f"coview-relay-drain-{self.peer.id}",
                )
            )

    def _discard(self, receiver: RTCRtpReceiver, track: MediaStreamTrack) -> None:
        """An extra track (audio, a second video): dropped unread, undecoded if possible."""
        if internals.install_passthrough(receiver, lambda codec, frame: None):
            return
        self.drains.append(
            self.relay.spawn(self._drain(track), f"coview-relay-drain-{self.peer.id}")
        )

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        # Keeps aiortc's unbounded track queue (decoded frames) from growing.
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass
        finally:
            track.stop()

    def _on_frame(self, codec: RTCRtpCodecParameters, frame: JitterFrame) -> None:
        # On the event loop, inside aiortc's RTP handling: cheap, never raises out.
        self.share.on_frame(self, codec, frame)

    def media_ssrc(self) -> int | None:
        if self.ssrc is None:
            remote = self.peer.pc.remoteDescription
            self.ssrc = _primary_ssrc(remote.sdp if remote is not None else None)
        if self.ssrc is None and self.receiver is not None:
            sources = self.receiver.getSynchronizationSources()
            if sources:
                return max(sources, key=lambda s: s.timestamp).source
        return self.ssrc

    def stop(self) -> None:
        for task in self.drains:
            task.cancel()
        self.drains = []


class _Subscriber:
    def __init__(self, share: _Share, peer: AiortcPeer) -> None:
        self.share = share
        self.peer = peer
        self.track: MediaStreamTrack | None = None
        self.started = False


class _Share:
    def __init__(self, relay: Relay, share_id: str) -> None:
        self.relay = relay
        self.id = share_id
        self.publisher: _Publisher | None = None
        self.subscribers: dict[str, _Subscriber] = {}
        self.generation = 0
        self.changed = asyncio.Event()
        # forwarding
        self.codec: RTCRtpCodecParameters | None = None
        self.tracks: set[_ForwardTrack] = set()
        self._last_keyframe_request = -1e9
        # re-encoding
        self.decoded: MediaStreamTrack | None = None
        self._media_relay: MediaRelay | None = None

    @property
    def media_relay(self) -> MediaRelay:
        if self._media_relay is None:
            self._media_relay = MediaRelay()
        return self._media_relay

    @property
    def empty(self) -> bool:
        return self.publisher is None and not self.subscribers

    def _bump(self) -> None:
        self.generation += 1
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    # -- publishers ----------------------------------------------------------------------

    def set_publisher(self, publisher: _Publisher) -> None:
        if self.publisher is not None:
            log.info(
                "relay: share %s: publisher %s replaces %s",
                self.id,
                publisher.peer.id,
                self.publisher.peer.id,
            )
        self.publisher = publisher
        self.codec = None
        self.decoded = None
        self._bump()

    def drop_publisher(self, publisher: _Publisher) -> None:
        publisher.stop()
        if self.publisher is publisher:
            self.publisher = None
            self.codec = None
            self.decoded = None
            self._bump()

    def set_decoded(self, publisher: _Publisher, track: MediaStreamTrack) -> None:
        if publisher is self.publisher:
            self.decoded = track
            self._bump()
            self.start_waiting()

    def on_frame(
        self, publisher: _Publisher, codec: RTCRtpCodecParameters, frame: JitterFrame
    ) -> None:
        if publisher is not self.publisher:
            return
        counters = self.relay.counters
        counters["frames_received"] += 1
        if self.codec is None:
            self.codec = codec
            log.info("relay: share %s: forwarding %s", self.id, codec.mimeType)
            asyncio.get_running_loop().call_soon(self.start_waiting)
        if not self.tracks:
            return
        cached: list[bool] = []

        def key() -> bool:
            if not cached:
                cached.append(is_keyframe(codec, frame.data))
            return cached[0]

        for track in list(self.tracks):
            track.push(codec, frame, key)

    # -- keyframes -----------------------------------------------------------------------

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a keyframe (coalesced to one per 250 ms)."""
        publisher = self.publisher
        if publisher is None or not publisher.forwarding or publisher.receiver is None:
            return
        now = time.monotonic()
        if now - self._last_keyframe_request < KEYFRAME_MIN_INTERVAL_S:
            return
        ssrc = publisher.media_ssrc()
        if ssrc is None:
            return
        self._last_keyframe_request = now
        self.relay.counters["keyframe_requests_sent"] += 1
        log.debug("relay: share %s: keyframe request (%s)", self.id, reason)
        self.relay.spawn(
            internals.send_keyframe_request(publisher.receiver, ssrc),
            f"coview-relay-pli-{self.id}",
        )

    def keyframe_wanted(self) -> None:
        """A subscriber waits for a keyframe and saw another delta frame."""
        if time.monotonic() - self._last_keyframe_request >= KEYFRAME_RETRY_S:
            self.request_keyframe("still waiting for a keyframe")

    def viewer_keyframe_request(self) -> None:
        """A subscriber's viewer sent PLI or FIR."""
        self.relay.counters["keyframe_requests_received"] += 1
        self.request_keyframe("viewer PLI/FIR")

    # -- subscribers ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Subscribers can be offered: the codec (forwarding) or the track is known."""
        publisher = self.publisher
        if publisher is None or not publisher.has_track:
            return False
        return self.codec is not None if publisher.forwarding else self.decoded is not None

    def start_waiting(self) -> None:
        if not self.ready:
            return
        for sub in list(self.subscribers.values()):
            if not sub.started and not sub.peer.closed:
                self.start_subscriber(sub)

    def start_subscriber(self, sub: _Subscriber) -> None:
        publisher = self.publisher
        assert publisher is not None
        sub.started = True
        transceiver: RTCRtpTransceiver
        if publisher.forwarding:
            assert self.codec is not None
            track = _ForwardTrack(self, self.codec)
            self.tracks.add(track)
            sub.track = track
            transceiver = sub.peer.pc.addTransceiver(track, direction="sendonly")
            capability = _capability(self.codec)
            if capability is not None:
                transceiver.setCodecPreferences(_with_rtx([capability]))
            internals.on_keyframe_request(transceiver.sender, self.viewer_keyframe_request)
        else:
            sub.track = _ReencodeTrack(self)
            transceiver = sub.peer.pc.addTransceiver(sub.track, direction="sendonly")
        sub.peer.start()


# --- the relay -------------------------------------------------------------------------------


class Relay:
    """Server-side WebRTC end for relayed shares; speaks the Coview protocol messages.

    Construct it anywhere; call :meth:`receive` from the event loop thread (a call from
    another thread is handed to the loop of the first call).  ``emit`` is called on the
    loop, with messages built by :func:`coview.protocol.make`.
    """

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], None],
        *,
        forward: bool = True,
        host_addresses: Sequence[str] = (),
    ) -> None:
        self._emit = emit
        self.forward = forward and internals.forwarding_available()
        self.host_addresses = tuple(host_addresses)
        self._peers: dict[str, _Publisher | _Subscriber] = {}
        self._shares: dict[str, _Share] = {}
        self._inbox: deque[dict[str, Any]] = deque()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.counters: dict[str, int] = {
            "frames_received": 0,
            "frames_forwarded": 0,
            "frames_codec_mismatch": 0,
            "subscriber_flushes": 0,
            "keyframe_requests_sent": 0,
            "keyframe_requests_received": 0,
        }
        internals.check_addresses(self.host_addresses)  # fail here, not at the first gather

    # -- the protocol end ----------------------------------------------------------------

    def receive(self, msg: dict[str, Any]) -> None:
        """Queue one message; it is handled in arrival order on the event loop."""
        try:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if self._closed:
                return
            if loop is not None and (self._loop is None or loop is self._loop):
                self._loop = loop
                self._enqueue(msg)
            elif self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._enqueue, msg)
            else:
                log.error(
                    "relay: receive() needs a running event loop; dropped %r",
                    msg.get("type") if isinstance(msg, dict) else msg,
                )
        except Exception:
            log.exception("relay: receive failed")

    async def close(self) -> None:
        """Close every peer connection and cancel every task."""
        self._closed = True
        self._inbox.clear()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        entries = list(self._peers.values())
        self._peers.clear()
        for entry in entries:
            self._detach(entry)
        await asyncio.gather(*(e.peer.close() for e in entries), return_exceptions=True)
        # Closes started by peer_gone run to their end (a half-closed pc keeps its threads).
        await asyncio.gather(*self._closing, return_exceptions=True)
        while self._tasks or self._dispatcher is not None:
            tasks = list(self._tasks)
            if self._dispatcher is not None:
                tasks.append(self._dispatcher)
                self._dispatcher = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        self._shares.clear()

    def snapshot(self) -> dict[str, int]:
        """Live objects, for leak tests and metrics: all zero when idle and empty."""
        publishers = sum(1 for e in self._peers.values() if isinstance(e, _Publisher))
        pumps = sum(1 for e in self._peers.values() if e.peer.busy)
        return {
            "peers": len(self._peers),
            "publishers": publishers,
            "subscribers": len(self._peers) - publishers,
            "shares": len(self._shares),
            "tracks": sum(len(s.tracks) for s in self._shares.values()),
            "tasks": len(self._tasks)
            + len(self._closing)
            + pumps
            + (1 if self._dispatcher is not None else 0),
        }

    def stats(self) -> dict[str, int]:
        """Counters since start: frames received/forwarded, keyframe requests."""
        return dict(self.counters)

    def peer(self, pc_id: str) -> AiortcPeer | None:
        """The peer connection shell for ``pc_id`` (its ``neg.history``, its ``pc``)."""
        entry = self._peers.get(pc_id)
        return entry.peer if entry is not None else None

    # -- tasks ---------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay: task %s failed", task.get_name(), exc_info=task.exception())

    # -- dispatch ------------------------------------------------------------------------

    def _enqueue(self, msg: dict[str, Any]) -> None:
        if self._closed:
            return
        self._inbox.append(msg)
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name="coview-relay-dispatch"
            )

    async def _dispatch(self) -> None:
        try:
            while self._inbox and not self._closed:
                msg = self._inbox.popleft()
                try:
                    self._handle(msg)
                except Exception:
                    log.exception("relay: handling %s failed", _describe(msg))
        finally:
            self._dispatcher = None

    def _handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            log.debug("relay: ignoring a non-object message")
            return
        mtype = msg.get("type")
        pc_id = msg.get("pc")
        if not isinstance(pc_id, str):
            log.debug("relay: ignoring %s without pc", _describe(msg))
            return
        if mtype == "peer":
            self._on_peer(msg, pc_id)
        elif mtype == "peer_gone":
            self._on_peer_gone(pc_id)
        elif mtype in ("offer", "answer", "ice", "restart"):
            entry = self._peers.get(pc_id)
            if entry is None:
                log.debug("relay: %s for unknown pc %s ignored", mtype, pc_id)
                return
            entry.peer.remote(msg)
        else:
            log.debug("relay: ignoring %s", _describe(msg))

    def _on_peer(self, msg: dict[str, Any], pc_id: str) -> None:
        share_id = msg.get("share")
        role = msg.get("role")
        ice_servers = msg.get("ice_servers")
        if not isinstance(share_id, str) or role not in (OFFERER, ANSWERER):
            log.warning("relay: bad peer message for pc %s ignored", pc_id)
            return
        if pc_id in self._peers:
            log.warning("relay: pc %s exists; repeated peer ignored", pc_id)
            return
        share = self._shares.get(share_id)
        if share is None:
            share = self._shares[share_id] = _Share(self, share_id)
        peer = AiortcPeer(
            pc_id,
            role,
            ice_servers if isinstance(ice_servers, list) else [],
            self._send,
            host_addresses=self.host_addresses,
            on_state=lambda state: self._on_state(pc_id, state),
            on_failed=lambda reason: self._on_failed(pc_id, reason),
        )
        if role == ANSWERER:
            publisher = _Publisher(self, share, peer)
            transceiver = peer.pc.addTransceiver("video", direction="recvonly")
            if self.forward:
                transceiver.setCodecPreferences(forwardable_preferences())
            peer.pc.on("track", publisher.on_track)
            self._peers[pc_id] = publisher
            share.set_publisher(publisher)
            log.info("relay: share %s: publisher pc %s", share_id, pc_id)
        else:
            sub = _Subscriber(share, peer)
            self._peers[pc_id] = sub
            share.subscribers[pc_id] = sub
            log.info("relay: share %s: subscriber pc %s", share_id, pc_id)
            if share.ready:
                share.start_subscriber(sub)

    def _on_peer_gone(self, pc_id: str) -> None:
        entry = self._peers.pop(pc_id, None)
        if entry is None:
            log.debug("relay: peer_gone for unknown pc %s ignored", pc_id)
            return
        self._detach(entry)
        task = asyncio.get_running_loop().create_task(
            entry.peer.close(), name=f"coview-relay-close-{pc_id}"
        )
        self._closing.add(task)
        task.add_done_callback(self._task_done)

    def _detach(self, entry: _Publisher | _Subscriber) -> None:
        share = entry.share
        if isinstance(entry, _Publisher):
            share.drop_publisher(entry)
        else:
            share.subscribers.pop(entry.peer.id, None)
            if entry.track is not None:
                entry.track.stop()
        if share.empty and self._shares.get(share.id) is share:
            del self._shares[share.id]
            log.info("relay: share %s freed", share.id)

    # -- what the peers say --------------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        try:
            self._emit(msg)
        except Exception:
            log.exception("relay: emit failed for %s", _describe(msg))

    def _on_state(self, pc_id: str, state: str) -> None:
        log.debug("relay: pc %s %s", pc_id, state)
        if state == CONNECTED:
            self._send(P.make("peer_status", pc=pc_id, state="connected"))

    def _on_failed(self, pc_id: str, reason: str) -> None:
        log.info("relay: pc %s failed (%s)", pc_id, reason)
        self._send(P.make("peer_status", pc=pc_id, state="failed"))


def _describe(msg: Any) -> str:
    if isinstance(msg, dict):
        return f"{msg.get('type')!r} (pc {msg.get('pc')!r})"
    return type(msg).__name__
