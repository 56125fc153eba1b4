"""The network check page (``/check``) and the ICE servers it tests (``/check/ice``).

Anyone may open the page (a visitor, or an agent who sends the link). ``/check/ice`` gives
the same ``iceServers`` a signaling connection gets, with TURN credentials minted for this
request alone; the TURN secret itself never leaves the server. The page's WebSocket check
needs no endpoint of its own: it sends a ``ping`` before any handshake, and ``/ws`` answers
with the ``handshake_required`` error without creating anything.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import pages, turn
from .settings import Settings


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
