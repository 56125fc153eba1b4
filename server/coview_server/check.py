"""The network check page (``/check``) and the ICE servers it tests (``/check/ice``).

Anyone may open the page (a visitor, or an agent who sends the link). ``/check/ice`` gives
the same ``iceServers`` a signaling connection gets, with TURN credentials minted for this
request alone; the TURN secret itself never leaves the server. The page's WebSocket check
needs no endpoint of its own: it sends a ``ping`` before any handshake, and ``/ws`` answers
with the ``handshake_required`` error without creating anything. ``/check/relay`` answers
a test call from the server's media relay addresses (``relay_probe``).
"""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import pages, turn
from .relay_probe import ProbeBusy, RelayProbe
from .security import AddressLimiter, check_origin
from .settings import Settings

#: An offer with every candidate gathered is a few KiB; anything much larger is not one.
MAX_OFFER_BYTES = 64 * 1024
#: Test calls per client address: a check page makes one; a few reloads are fine.
PROBES_PER_ADDRESS = AddressLimiter(window_s=60.0, limit=6)


async def check_page(request: Request) -> Response:
    return pages.render_pyscript(request, "check", "mpy")


async def check_ice(request: Request) -> Response:
    settings: Settings = request.state.settings
    return JSONResponse(
        {
            "ice_servers": turn.ice_servers_for(settings)(request),
            "ice_transport_policy": settings.ice_transport_policy,
        },
        headers={"Cache-Control": "no-store"},
    )


def _refuse(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status, headers={"Cache-Control": "no-store"})


async def check_relay(request: Request) -> Response:
    """``POST {"sdp": offer}`` → ``{"sdp": answer}`` from a short test call with the relay."""
    probe: RelayProbe | None = request.state.relay_probe
    if probe is None:
        return _refuse(404, "The media relay is turned off on this server.")
    # Same-origin only: a foreign page must not make the server place calls.
    if not check_origin(request.headers, set(), request.headers.get("host", "")):
        return _refuse(403, "This check runs only from the Coview check page.")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _refuse(415, "Send the offer as application/json.")
    address = request.client.host if request.client else "?"
    if not PROBES_PER_ADDRESS.allow(address, time.monotonic()):
        return _refuse(429, "Too many checks from this address; wait a minute.")
    body = await request.body()
    if len(body) > MAX_OFFER_BYTES:
        return _refuse(413, "The offer is too large.")
    try:
        offer = json.loads(body)
        sdp = offer["sdp"] if isinstance(offer, dict) else None
    except (ValueError, KeyError):
        sdp = None
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        return _refuse(400, 'Send {"sdp": "<an SDP offer>"}.')
    try:
        answer = await probe.answer(sdp)
    except ProbeBusy:
        return _refuse(503, "The relay is busy with other checks; try again in a few seconds.")
    except ValueError as exc:
        return _refuse(400, "The relay could not use this offer: " + str(exc)[:200])
    return JSONResponse({"sdp": answer}, headers={"Cache-Control": "no-store"})
