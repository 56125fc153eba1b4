"""The network check's test call: a real aiortc "browser" receives the moving test picture.

Every peer gathers on 127.0.0.1 only (scripts/test also runs this in a loopback-only
namespace)."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from coview_server import aiortc_internals as internals, relay_probe
from coview_server.relay_probe import ProbeBusy, RelayProbe

LOOPBACK = ("127.0.0.1",)


async def _offer() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    with internals.host_addresses(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    return pc


def test_the_page_receives_frames_whose_colour_changes() -> None:
    async def run() -> None:
        probe = RelayProbe(LOOPBACK)
        pc = await _offer()
        tracks: asyncio.Queue[object] = asyncio.Queue()
        pc.on("track", tracks.put_nowait)
        answer = await probe.answer(pc.localDescription.sdp)
        assert "a=sendonly" in answer
        assert all(
            "127.0.0.1" in line for line in answer.splitlines() if line.startswith("a=candidate")
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = await asyncio.wait_for(tracks.get(), 10)
        seen = set()
        for _ in range(40):
            frame = await asyncio.wait_for(track.recv(), 10)  # type: ignore[attr-defined]
            rgb = frame.reformat(format="rgb24").planes[0]
            pixel = bytes(rgb)[:3]
            seen.add(max(range(3), key=lambda i: pixel[i]))  # the dominant channel
            if len(seen) > 1:
                break
        assert len(seen) > 1, "the test picture should move"
        assert probe.active == 1
        await pc.close()
        await probe.close()
        assert probe.active == 0

    asyncio.run(run())


def test_limits_bad_offers_and_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        probe = RelayProbe(LOOPBACK)
        with pytest.raises(ValueError):
            await probe.answer("v=0\r\nnonsense\r\n")
        assert probe.active == 0  # a refused offer leaves nothing behind
        audio_only = RTCPeerConnection()
        audio_only.addTransceiver("audio", direction="recvonly")
        with internals.host_addresses(LOOPBACK):
            await audio_only.setLocalDescription(await audio_only.createOffer())
        with pytest.raises(ValueError, match="no video"):
            await probe.answer(audio_only.localDescription.sdp)
        await audio_only.close()

        monkeypatch.setattr(relay_probe, "MAX_ACTIVE", 2)
        monkeypatch.setattr(relay_probe, "LIFETIME_S", 0.5)
        pcs = [await _offer() for _ in range(3)]
        await probe.answer(pcs[0].localDescription.sdp)
        await probe.answer(pcs[1].localDescription.sdp)
        with pytest.raises(ProbeBusy):
            await probe.answer(pcs[2].localDescription.sdp)
        # Each probe ends by itself after its lifetime, freeing its place.
        for _ in range(50):
            if probe.active == 0:
                break
            await asyncio.sleep(0.05)
        assert probe.active == 0
        await probe.answer(pcs[2].localDescription.sdp)
        await probe.close()
        for pc in pcs:
            await pc.close()
        assert probe.active == 0

    asyncio.run(run())


def test_addresses_are_checked() -> None:
    with pytest.raises(ValueError):
        RelayProbe(("not-an-address",))
