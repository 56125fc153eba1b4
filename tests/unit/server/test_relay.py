"""The media relay with real aiortc peers in-process, on loopback only.

A small router plays the hub: it sends ``peer`` to the relay and to the test peers and
routes everything else by ``pc``.  Test publishers and viewers are aiortc peers driven by
the same ``Negotiation`` (:class:`coview_server.relay.AiortcPeer`).  The publisher sends
known solid colours (left half / right half, changing every few frames); viewers decode
and read pixels.  Every peer gathers on 127.0.0.1 only and has no STUN/TURN server.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    VideoStreamTrack,
)
from aiortc.codecs import h264, vpx
from av import VideoFrame

from coview import protocol as P
from coview_server import aiortc_internals as internals, relay as relay_module
from coview_server.relay import AiortcPeer, Relay

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LOOPBACK = ("127.0.0.1",)
WIDTH, HEIGHT = 320, 240
#: (left, right) colours; the publisher moves to the next pair every PHASE_FRAMES frames.
PHASES = [((255, 0, 0), (0, 0, 255)), ((0, 255, 0), (255, 255, 0)), ((255, 255, 255), (0, 0, 0))]
PHASE_FRAMES = 10
TOLERANCE = 60  # per channel: VP8/H264 at low bitrate, and YUV 4:2:0 round trips

ANSWERER_HISTORY = ["new", "answering", "connecting", "connected"]
OFFERER_HISTORY = ["new", "offering", "connecting", "connected"]


@pytest.fixture(autouse=True)
def _loopback_only() -> Any:
    # Belt and braces: every aiortc peer of the process gathers on 127.0.0.1 only, even
    # one that would forget host_addresses.
    internals.set_default_host_addresses(LOOPBACK)
    yield
    internals.set_default_host_addresses(())


@pytest.fixture
def codec_use(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[int]]:
    """Which encoder instances encoded a frame, which decoder instances were created."""
    used: dict[str, set[int]] = {"encoders": set(), "decoders": set()}
    for cls in (vpx.Vp8Encoder, h264.H264Encoder):
        original_encode = cls.encode

        def encode(
            self: Any, frame: Any, force_keyframe: bool = False, _o: Any = original_encode
        ) -> Any:
            used["encoders"].add(id(self))
            return _o(self, frame, force_keyframe)

        monkeypatch.setattr(cls, "encode", encode)
    for dcls in (vpx.Vp8Decoder, h264.H264Decoder):
        original_init = dcls.__init__

        def init(self: Any, _o: Any = original_init) -> None:
            used["decoders"].add(id(self))
            _o(self)

        monkeypatch.setattr(dcls, "__init__", init)
    return used


# --- media --------------------------------------------------------------------------------


class ColourTrack(VideoStreamTrack):
    """Left half one colour, right half another, the pair changing every PHASE_FRAMES."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0
        self._rows: dict[int, tuple[bytes, int]] = {}

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        phase = (self.frames // PHASE_FRAMES) % len(PHASES)
        self.frames += 1
        frame = VideoFrame(WIDTH, HEIGHT, "rgb24")
        plane = frame.planes[0]
        left, right = PHASES[phase]
        row = bytes(left) * (WIDTH // 2) + bytes(right) * (WIDTH - WIDTH // 2)
        row += bytes(plane.line_size - len(row))
        plane.update(row * HEIGHT)
        frame.pts = pts
        frame.time_base = time_base
        return frame


def phase_of(frame: VideoFrame) -> int | None:
    """Which PHASES pair the frame shows, or None if it matches none (e.g. grey garbage)."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    data = bytes(plane)
    line = plane.line_size

    def pixel(x: int, y: int) -> tuple[int, ...]:
        at = y * line + 3 * x
        return tuple(data[at : at + 3])

    y = rgb.height // 2
    left, right = pixel(rgb.width // 4, y), pixel(3 * rgb.width // 4, y)
    for index, (want_left, want_right) in enumerate(PHASES):
        if all(
            abs(a - b) <= TOLERANCE
            for a, b in zip(left + right, want_left + want_right, strict=True)
        ):
            return index
    return None


# --- the hub stand-in ---------------------------------------------------------------------


class Viewer:
    def __init__(self, hub: Hub, pc_id: str) -> None:
        self.peer = AiortcPeer(pc_id, "answerer", [], hub.from_client, host_addresses=LOOPBACK)
        self.peer.pc.addTransceiver("video", direction="recvonly")
        self.peer.pc.on("track", self._on_track)
        self.frames = 0
        self.phases: list[int | None] = []
        self.task: asyncio.Task[None] | None = None

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.task = asyncio.get_running_loop().create_task(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, VideoFrame)
                self.frames += 1
                self.phases.append(phase_of(frame))
        except MediaStreamError:
            pass

    def good_phases(self) -> set[int]:
        return {p for p in self.phases if p is not None}


class Publisher:
    def __init__(self, hub: Hub, pc_id: str, codec: str | None = None) -> None:
        self.peer = AiortcPeer(pc_id, "offerer", [], hub.from_client, host_addresses=LOOPBACK)
        self.track = ColourTrack()
        self.sender = self.peer.pc.addTrack(self.track)
        if codec is not None:
            caps = RTCRtpSender.getCapabilities("video").codecs
            chosen = [c for c in caps if c.mimeType.lower() == codec]
            self.peer.pc.getTransceivers()[0].setCodecPreferences(chosen)
        self.keyframe_requests = 0
        original = self.sender._send_keyframe

        def count() -> None:
            self.keyframe_requests += 1
            original()

        internals.on_keyframe_request(self.sender, count)


class Hub:
    """Sends ``peer`` to both ends and routes the rest by ``pc``, validating everything."""

    def __init__(
        self, emit_hook: Callable[[dict[str, Any]], None] | None = None, **relay_kwargs: Any
    ) -> None:
        self.relay = Relay(self.from_relay, host_addresses=LOOPBACK, **relay_kwargs)
        self.clients: dict[str, AiortcPeer] = {}
        self.statuses: list[tuple[str, str]] = []
        self.sdps: list[str] = []
        self.emit_hook = emit_hook

    def from_relay(self, msg: dict[str, Any]) -> None:
        P.validate(msg, P.C2S)  # the relay is one more client of the hub
        if self.emit_hook is not None:
            self.emit_hook(msg)
        if "sdp" in msg:
            self.sdps.append(msg["sdp"])
        if msg["type"] == "peer_status":
            self.statuses.append((msg["pc"], msg["state"]))
            return
        client = self.clients.get(msg["pc"])
        if client is not None:
            asyncio.get_running_loop().call_soon(client.remote, msg)

    def from_client(self, msg: dict[str, Any]) -> None:
        P.validate(msg, P.C2S)
        if "sdp" in msg:
            self.sdps.append(msg["sdp"])
        asyncio.get_running_loop().call_soon(self.relay.receive, msg)

    def publish(self, share: str, pc_id: str, codec: str | None = None) -> Publisher:
        pub = Publisher(self, pc_id, codec)
        self.clients[pc_id] = pub.peer
        self.relay.receive(P.make("peer", share=share, pc=pc_id, role="answerer", ice_servers=[]))
        pub.peer.start()
        return pub

    def view(self, share: str, pc_id: str) -> Viewer:
        viewer = Viewer(self, pc_id)
        self.clients[pc_id] = viewer.peer
        self.relay.receive(P.make("peer", share=share, pc=pc_id, role="offerer", ice_servers=[]))
        return viewer

    async def gone(self, share: str, pc_id: str) -> None:
        self.relay.receive(P.make("peer_gone", share=share, pc=pc_id))
        client = self.clients.pop(pc_id, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for client in list(self.clients.values()):
            await client.close()
        self.clients.clear()
        await self.relay.close()

    def assert_loopback_only(self) -> None:
        for sdp in self.sdps:
            for line in sdp.splitlines():
                if line.startswith("a=candidate:"):
                    assert line.split()[4] == "127.0.0.1", line
                if line.startswith("c=IN IP4"):
                    assert line.split()[2] in ("127.0.0.1", "0.0.0.0"), line


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    h = Hub()
    try:
        yield h
    finally:
        await h.close()


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def sees_live_video(viewer: Viewer) -> Callable[[], bool]:
    # Two different colour pairs decoded: pixels arrive and they move.
    return lambda: len(viewer.good_phases()) >= 2


# --- forwarding ---------------------------------------------------------------------------


async def test_one_viewer_gets_forwarded_frames_without_transcoding(
    hub: Hub, codec_use: dict[str, set[int]]
) -> None:
    pub = hub.publish("s1", "pub")
    viewer = hub.view("s1", "v1")
    await until(sees_live_video(viewer), "the viewer to decode the publisher's colours")

    stats = hub.relay.stats()
    assert stats["frames_forwarded"] >= viewer.frames > 0
    assert stats["frames_received"] >= stats["frames_forwarded"]
    # Only the publisher encodes and only the viewer decodes: the relay neither decoded
    # nor re-encoded a single frame.
    assert len(codec_use["encoders"]) == 1
    assert len(codec_use["decoders"]) == 1
    assert "VP8/90000" in hub.sdps[-1]  # what the relay offered the viewer

    relay_pub, relay_sub = hub.relay.peer("pub"), hub.relay.peer("v1")
    assert relay_pub is not None and relay_sub is not None
    assert relay_pub.neg.history == ANSWERER_HISTORY
    assert relay_sub.neg.history == OFFERER_HISTORY
    assert pub.peer.neg.history == OFFERER_HISTORY
    assert viewer.peer.neg.history == ANSWERER_HISTORY
    assert sorted(hub.statuses) == [("pub", "connected"), ("v1", "connected")]
    assert hub.relay.snapshot()["tracks"] == 1
    hub.assert_loopback_only()

    await hub.gone("s1", "v1")
    await hub.gone("s1", "pub")
    await until(lambda: not any(hub.relay.snapshot().values()), "the relay to be empty")
    assert relay_pub.neg.history == [*ANSWERER_HISTORY, "closed"]
    assert relay_sub.neg.history == [*OFFERER_HISTORY, "closed"]


async def test_a_late_viewer_gets_a_keyframe_and_viewer_plis_reach_the_publisher(
    hub: Hub, codec_use: dict[str, set[int]]
) -> None:
    pub = hub.publish("s1", "pub")
    first = hub.view("s1", "v1")
    await until(sees_live_video(first), "the first viewer to decode")
    await asyncio.sleep(0.5)  # well into the stream: the next frames are all delta frames
    before = pub.keyframe_requests

    late = hub.view("s1", "v2")
    await until(sees_live_video(late), "the late viewer to decode")
    assert pub.keyframe_requests > before  # the relay asked the publisher for a keyframe
    assert late.phases[0] is not None  # its first decoded frame is already a clean picture
    assert len(codec_use["encoders"]) == 1
    assert len(codec_use["decoders"]) == 2

    # A viewer's own PLI goes through the relay to the publisher.
    await asyncio.sleep(0.3)  # past the relay's keyframe-request coalescing
    before, received = pub.keyframe_requests, hub.relay.stats()["keyframe_requests_received"]
    receiver = late.peer.pc.getTransceivers()[0].receiver
    ssrc = receiver.getSynchronizationSources()[0].source
    await internals.send_keyframe_request(receiver, ssrc)
    await until(lambda: pub.keyframe_requests > before, "the PLI to reach the publisher")
    assert hub.relay.stats()["keyframe_requests_received"] == received + 1

    frames = first.frames
    await until(lambda: first.frames > frames + 5, "the first viewer to keep going")
    assert hub.relay.snapshot() == {
        "peers": 3,
        "publishers": 1,
        "subscribers": 2,
        "shares": 1,
        "tracks": 2,
        "tasks": 0,
    }


async def test_h264_is_forwarded_too(hub: Hub, codec_use: dict[str, set[int]]) -> None:
    hub.publish("s1", "pub", codec="video/h264")
    viewer = hub.view("s1", "v1")
    await until(sees_live_video(viewer), "the viewer to decode H264")
    assert "H264/90000" in hub.sdps[-1] and "VP8" not in hub.sdps[-1]
    assert len(codec_use["encoders"]) == 1
    assert len(codec_use["decoders"]) == 1
    assert hub.relay.stats()["frames_forwarded"] > 0


async def test_viewer_waiting_for_the_publisher_starts_when_it_comes(hub: Hub) -> None:
    viewer = hub.view("s1", "v1")
    await asyncio.sleep(0.3)
    assert viewer.peer.neg.history == ["new"]  # nothing offered without a publisher
    assert hub.relay.snapshot()["subscribers"] == 1
    hub.publish("s1", "pub")
    await until(sees_live_video(viewer), "the waiting viewer to decode")


async def test_reencoding_fallback_delivers_pixels(codec_use: dict[str, set[int]]) -> None:
    hub = Hub(forward=False)
    try:
        hub.publish("s1", "pub")
        viewer = hub.view("s1", "v1")
        await until(sees_live_video(viewer), "the viewer to decode re-encoded frames")
        assert hub.relay.stats()["frames_forwarded"] == 0
        assert len(codec_use["encoders"]) == 2  # the publisher's and the relay's
        assert len(codec_use["decoders"]) == 2  # the relay's and the viewer's
        relay_sub = hub.relay.peer("v1")
        assert relay_sub is not None and relay_sub.neg.history == OFFERER_HISTORY
        await hub.gone("s1", "pub")
        await hub.gone("s1", "v1")
        await until(lambda: not any(hub.relay.snapshot().values()), "the relay to be empty")
    finally:
        await hub.close()


# --- freeing everything -------------------------------------------------------------------


def _our_threads() -> set[str]:
    # The default executor's workers (aiortc encodes there) live as long as the loop.
    return {t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def test_sessions_free_everything(hub: Hub) -> None:
    relay = hub.relay
    pcs: weakref.WeakSet[Any] = weakref.WeakSet()
    baseline_tasks: set[asyncio.Task[Any]] = set()
    baseline_threads: set[str] = set()
    for round_ in range(5):
        share = f"s{round_}"
        hub.publish(share, f"pub{round_}")
        viewer = hub.view(share, f"v{round_}")
        await until(lambda v=viewer: v.good_phases() != set(), "the viewer to decode")
        for pc_id in (f"pub{round_}", f"v{round_}"):
            shell = relay.peer(pc_id)
            assert shell is not None
            pcs.add(shell.pc)
        del shell
        # The publisher goes first: the share stays for its viewer, then goes with it.
        await hub.gone(share, f"pub{round_}")
        await until(lambda: relay.snapshot()["publishers"] == 0, "the publisher to go")
        assert relay.snapshot()["shares"] == 1
        await hub.gone(share, f"v{round_}")
        await until(lambda: not any(relay.snapshot().values()), "the relay to be empty")
        assert viewer.task is not None
        await asyncio.wait_for(viewer.task, 5)  # the viewer's track ended
        await asyncio.sleep(0.1)  # aiortc's own tasks finish after close
        if round_ == 0:  # the first round starts the executor threads aiortc encodes in
            baseline_tasks = set(asyncio.all_tasks())
            baseline_threads = _our_threads()
            continue
        await until(
            lambda t=baseline_tasks: set(asyncio.all_tasks()) <= t, "tasks to end", within=5
        )
        await until(lambda t=baseline_threads: _our_threads() <= t, "threads to end", within=5)
    gc.collect()
    assert len(pcs) == 0, "RTCPeerConnection objects outlive their session"


# --- garbage in -----------------------------------------------------------------------------


async def test_garbage_never_raises_and_breaks_no_other_pc(hub: Hub) -> None:
    relay = hub.relay
    viewer = hub.view("s1", "v1")
    junk: list[Any] = [
        None,
        "offer",
        42,
        {},
        {"type": "offer"},
        {"type": "offer", "pc": "nobody", "sdp": "v=0"},
        {"type": "ice", "pc": "nobody", "candidate": None},
        {"type": "restart", "pc": "nobody"},
        {"type": "peer", "pc": "p", "share": 5, "role": "offerer"},
        {"type": "peer", "pc": "p", "share": "s9", "role": "boss"},
        {"type": "peer_gone", "pc": "nobody", "share": "s1"},
        {"type": "share_state", "pc": "v1"},
        P.make("answer", pc="v1", sdp="v=0\r\n"),  # an answer with no offer pending
        P.make("offer", pc="v1", sdp="v=0\r\n"),  # the subscriber is the offerer
        P.make("ice", pc="v1", candidate={"candidate": "candidate:garbage", "sdpMid": "0"}),
        P.make("peer", share="s1", pc="v1", role="answerer"),  # a repeated pc
    ]
    for msg in junk:
        relay.receive(msg)
    # A publisher whose offer is not SDP fails on its own and says so.
    hub.relay.receive(P.make("peer", share="s2", pc="bad", role="answerer", ice_servers=[]))
    hub.relay.receive(P.make("offer", pc="bad", sdp="this is not SDP"))
    await until(lambda: ("bad", "failed") in hub.statuses, "the bad pc to fail")
    bad = relay.peer("bad")
    assert bad is not None and bad.neg.history == ["new", "answering", "failed"]
    # receive() from another thread (no running loop) neither raises nor blocks.
    thread = threading.Thread(target=relay.receive, args=(P.make("restart", pc="nobody"),))
    thread.start()
    thread.join()

    hub.publish("s1", "pub")
    await until(sees_live_video(viewer), "the viewer to decode despite the garbage")
    relay_sub = relay.peer("v1")
    assert relay_sub is not None and relay_sub.neg.history == OFFERER_HISTORY

    await hub.gone("s1", "v1")
    relay.receive(P.make("ice", pc="v1", candidate={"candidate": "", "sdpMid": "0"}))
    relay.receive(P.make("answer", pc="v1", sdp="v=0\r\n"))
    await hub.gone("s2", "bad")
    await hub.gone("s1", "pub")
    await until(lambda: not any(relay.snapshot().values()), "the relay to be empty")


async def test_a_failing_emit_does_not_break_the_relay() -> None:
    calls: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        calls.append(msg["type"])
        if msg["type"] == "peer_status":
            raise RuntimeError("the hub is having a bad day")

    hub = Hub(emit_hook=hook)
    try:
        hub.publish("s1", "pub")
        viewer = hub.view("s1", "v1")
        await until(sees_live_video(viewer), "the viewer to decode")
        assert "peer_status" in calls
    finally:
        await hub.close()
    assert not any(hub.relay.snapshot().values())


async def test_a_pc_that_cannot_connect_is_reported_failed(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "CONNECT_TIMEOUT_S", 0.5)
    # A real offer without its candidates: ICE waits for candidates that never come.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(ColourTrack())
        with internals.host_addresses(LOOPBACK):
            await pc.setLocalDescription(await pc.createOffer())
        sdp = "".join(
            line + "\r\n"
            for line in pc.localDescription.sdp.splitlines()
            if not line.startswith(("a=candidate:", "a=end-of-candidates"))
        )
        hub.relay.receive(P.make("peer", share="s1", pc="lost", role="answerer", ice_servers=[]))
        hub.relay.receive(P.make("offer", pc="lost", sdp=sdp))
        await until(lambda: ("lost", "failed") in hub.statuses, "the timeout to fail the pc")
        lost = hub.relay.peer("lost")
        assert lost is not None
        assert lost.neg.history == ["new", "answering", "connecting", "failed"]
    finally:
        await pc.close()


def test_bad_host_addresses_are_refused() -> None:
    with pytest.raises(ValueError):
        Relay(lambda msg: None, host_addresses=("localhost",))
