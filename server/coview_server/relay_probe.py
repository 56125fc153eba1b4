"""The network check's relay test: can this browser get media from the server's relay?

The check page (``/check``) cannot join a real share, so it asks for a short test call
instead: it POSTs an offer (all candidates gathered, no trickle) to ``/check/relay`` and
the server answers from an aiortc peer, on the same host addresses as the media relay,
that sends a small moving test picture.  The page passes the check when it decodes frames.

Each probe costs an encoder, so they are few (``MAX_ACTIVE``), short (``LIFETIME_S``) and
limited per client address by the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Sequence
from typing import Any

from . import aiortc_internals as internals

log = logging.getLogger("coview.relay")

MAX_ACTIVE = 8
LIFETIME_S = 15.0
WIDTH, HEIGHT, FPS = 160, 120, 10


class ProbeBusy(Exception):
    """Too many probes at once: the caller answers 503 and the page says so."""


def _test_track() -> Any:
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class Colours(VideoStreamTrack):
        """Solid colours that change every second: cheap to encode, clearly moving."""

        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._n = 0

        async def recv(self) -> VideoFrame:
            await asyncio.sleep(1 / FPS)
            self._n += 1
            shade = (self._n // FPS) % 3
            frame = VideoFrame(WIDTH, HEIGHT, "rgb24")
            rgb = ((0, 160, 0), (0, 0, 200), (200, 0, 0))[shade]
            frame.planes[0].update(bytes(rgb) * (WIDTH * HEIGHT))
            frame.pts = self._n
            frame.time_base = fractions.Fraction(1, FPS)
            return frame

    return Colours()


class RelayProbe:
    def __init__(self, host_addresses: Sequence[str] = ()) -> None:
        self.host_addresses = internals.check_addresses(host_addresses)
        self._active: dict[Any, asyncio.Task[None]] = {}

    @property
    def active(self) -> int:
        return len(self._active)

    async def answer(self, offer_sdp: str) -> str:
        """The answer SDP (with the probe's candidates) for the page's offer.

        Raises ``ProbeBusy`` at the limit and ``ValueError`` for an offer aiortc refuses.
        """
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        if len(self._active) >= MAX_ACTIVE:
            raise ProbeBusy("too many network checks at once")
        # No ICE servers: the page must reach these addresses as it would reach the relay.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._active[pc] = asyncio.create_task(self._expire(pc))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if not any(t.kind == "video" for t in pc.getTransceivers()):
                raise ValueError("the offer has no video to receive")
            pc.addTrack(_test_track())  # takes the offer's video transceiver
            answer = await pc.createAnswer()
            with internals.host_addresses(self.host_addresses):
                await pc.setLocalDescription(answer)
        except Exception as exc:
            await self._close(pc)
            if isinstance(exc, ValueError):
                raise
            raise ValueError(str(exc) or exc.__class__.__name__) from exc

        @pc.on("connectionstatechange")
        async def _changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(pc)

        return str(pc.localDescription.sdp)

    async def close(self) -> None:
        for pc in list(self._active):
            await self._close(pc)

    async def _expire(self, pc: Any) -> None:
        started = time.monotonic()
        await asyncio.sleep(LIFETIME_S)
        log.debug("relay probe closed after %.0f s", time.monotonic() - started)
        task = self._active.pop(pc, None)
        del task  # this very task: nothing to cancel
        await pc.close()

    async def _close(self, pc: Any) -> None:
        task = self._active.pop(pc, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pc.close()
