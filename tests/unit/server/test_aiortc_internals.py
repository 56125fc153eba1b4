"""Guard: the aiortc/aioice internals ``coview_server.aiortc_internals`` relies on.

aiortc and aioice are pinned exactly (pyproject.toml).  When either is upgraded, these
tests say which internal moved; fix ``aiortc_internals.py`` (and only it), then the pins.
Nothing here touches the network: the one gathering test binds on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aioice
import aioice.ice
import aiortc
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from aiortc.codecs import h264, vpx
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

from coview_server import aiortc_internals as internals

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def test_pinned_versions() -> None:
    assert aiortc.__version__ == internals.AIORTC_VERSION, (
        f"aiortc {aiortc.__version__} installed; coview_server/aiortc_internals.py is written "
        f"for {internals.AIORTC_VERSION}: re-check every internal it uses, then the pin"
    )
    assert aioice.__version__ == internals.AIOICE_VERSION, (
        f"aioice {aioice.__version__} installed; aiortc_internals.py is written for "
        f"{internals.AIOICE_VERSION} (aioice.ice.get_host_addresses)"
    )


def test_no_internal_moved() -> None:
    problems = internals.problems()
    assert not problems, "aiortc internals changed:\n  " + "\n  ".join(problems)
    assert internals.forwarding_available()


@pytest.fixture
async def transceiver() -> AsyncIterator[RTCRtpTransceiver]:
    # No description is ever set, so nothing gathers and nothing is sent.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        yield pc.addTransceiver("video")
    finally:
        await pc.close()


async def test_receiver_decoder_queue_can_be_replaced(transceiver: RTCRtpTransceiver) -> None:
    receiver = transceiver.receiver
    assert getattr(receiver, "_RTCRtpReceiver__decoder_thread", "missing") is None, (
        "RTCRtpReceiver.__decoder_thread (None until receive()) is gone"
    )
    assert hasattr(receiver, "_RTCRtpReceiver__decoder_queue"), (
        "RTCRtpReceiver.__decoder_queue is gone"
    )
    seen: list[tuple[Any, Any]] = []
    assert internals.install_passthrough(receiver, lambda codec, frame: seen.append((codec, frame)))
    queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    frame = JitterFrame(b"\x10\x02\x00\x9d\x01\x2a", 3000)
    queue.put((VP8, frame))  # what _handle_rtp_packet does with a complete frame
    assert seen == [(VP8, frame)]
    queue.put(None)  # what __stop_decoder does
    assert queue.get() is None  # what decoder_worker then reads: it exits at once
    queue.put((VP8, frame))
    assert len(seen) == 1  # nothing after the stop


async def test_sender_keyframe_requests_can_be_heard(transceiver: RTCRtpTransceiver) -> None:
    sender = transceiver.sender
    heard: list[str] = []
    internals.on_keyframe_request(sender, lambda: heard.append("kf"))
    for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
        packet = RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=sender._ssrc)
        await sender._handle_rtcp_packet(packet)
    assert heard == ["kf", "kf"], "RTCRtpSender._handle_rtcp_packet no longer calls _send_keyframe"


async def test_receiver_sends_pli(transceiver: RTCRtpTransceiver) -> None:
    receiver = transceiver.receiver
    sent: list[Any] = []

    async def capture(packet: Any) -> None:
        sent.append(packet)

    receiver._send_rtcp = capture  # type: ignore[method-assign]
    await internals.send_keyframe_request(receiver, 1234)
    assert len(sent) == 1, "RTCRtpReceiver._send_rtcp_pli did not send through _send_rtcp"
    packet = sent[0]
    assert isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI
    assert packet.media_ssrc == 1234


def test_encoders_pack_pre_encoded_packets() -> None:
    for encoder in (vpx.Vp8Encoder(), h264.H264Encoder()):
        data = b"\x00\x00\x00\x01\x65" + bytes(3000)  # an H264 IDR NAL; VP8 takes any bytes
        packet = av.Packet(data)
        packet.pts = 6000
        packet.time_base = VIDEO_TIME_BASE
        payloads, timestamp = encoder.pack(packet)
        name = type(encoder).__name__
        assert payloads and timestamp == 6000, f"{name}.pack(av.Packet) changed"
        assert all(len(p) <= 1300 + 16 for p in payloads), f"{name}.pack payload sizes changed"
        assert getattr(encoder, "codec", None) is None, f"{name}.pack created a codec context"


def test_host_addresses_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice's own enumeration is replaced by a fake: this test never lists interfaces.
    monkeypatch.setattr(internals, "_original_get_host_addresses", lambda v4, v6: ["192.0.2.7"])
    monkeypatch.setattr(internals, "_DEFAULT_HOST_ADDRESSES", ())
    with internals.host_addresses(("127.0.0.1", "::1")):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses(True, True) == ["192.0.2.7"]  # aioice's behaviour
    internals.set_default_host_addresses(("127.0.0.1",))
    assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    internals.set_default_host_addresses(())
    assert aioice.ice.get_host_addresses(True, True) == ["192.0.2.7"]
    with pytest.raises(ValueError):
        internals.set_default_host_addresses(("eth0",))


async def test_gathering_uses_the_hook() -> None:
    if internals.problems():  # never risk gathering on every interface
        pytest.fail("aiortc/aioice internals moved (see test_no_internal_moved); not gathering")
    connection = aioice.Connection(ice_controlling=True)
    try:
        with internals.host_addresses(("127.0.0.1",)):
            await connection.gather_candidates()
        hosts = {c.host for c in connection.local_candidates}
        assert hosts == {"127.0.0.1"}, (
            "aioice.ice.Connection.gather_candidates ignored the replaced get_host_addresses"
        )
    finally:
        await connection.close()
