"""The Starlette application factory: routes, middleware and typed lifespan state.

Wiring only: behaviour lives in the modules named by their noun (``hub``, ``signaling``,
``pages``, ``store``…).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TypedDict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from . import admin, check, pages, phone, signaling, turn
from .bootstrap import ensure_admin
from .broker import broker_for
from .cluster import Cluster
from .hub import Conn, Hub, HubFront, run_clock
from .limits import AddressGate, BodyLimit
from .relay_bridge import RelayBridge
from .relay_probe import RelayProbe
from .security import PathPolicy, SecurityHeaders
from .settings import Settings
from .static import Assets
from .store import Store
from .vendor import VendorAssets

log = logging.getLogger("coview")


class State(TypedDict):
    settings: Settings
    store: Store
    #: The hub itself in one process; the gateway to it when several serve (Redis).
    hub: HubFront
    #: ICE servers for a socket's ``welcome`` (fresh TURN credentials each time).
    ice_servers: Callable[[Conn], list[dict[str, Any]]]
    ws_gate: AddressGate
    #: The network check's test calls with the relay; None when the relay is off.
    relay_probe: RelayProbe | None


def _prepare_sqlite_dir(url: str) -> None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        _prepare_sqlite_dir(settings.database_url)
        store = await Store.open(settings.database_url)
        password = await ensure_admin(store, settings.admin_email, settings.admin_password)
        if password is not None:
            # Printed once, to the terminal of whoever started the server; never logged.
            sys.stdout.write(
                f"\nCoview created the first admin account:\n"
                f"  email:    {settings.admin_email}\n  password: {password}\n"
                f"Change it after logging in (coview reset-password).\n\n"
            )
            sys.stdout.flush()
        ice_servers = turn.ice_servers_for(settings)
        bridges: list[RelayBridge] = []

        async def attach_relay(hub: Hub) -> bool:
            """The media relay serves the process that runs the hub."""
            bridge = RelayBridge(hub, settings)
            bridges.append(bridge)
            return settings.media_relay != "off" and await bridge.start()

        front: HubFront
        cluster: Cluster | None = None
        ticker: asyncio.Task[None] | None = None
        local_hub: Hub | None = None
        relayed = False
        if settings.multi_instance:
            broker = broker_for(settings.redis_url, settings.redis_prefix)
            await broker.start()
            cluster = Cluster(
                broker, store, lambda: Hub(store, settings, ice_servers=ice_servers), attach_relay
            )
            await cluster.start()
            front = cluster
            relayed = settings.media_relay != "off"
            log.info("serving as node %s of a deployment (Redis)", broker.node_id)
        else:
            local_hub = Hub(store, settings, ice_servers=ice_servers)
            await local_hub.recover()
            relayed = await attach_relay(local_hub)
            ticker = asyncio.create_task(run_clock(local_hub))
            front = local_hub
        probe = RelayProbe(settings.relay_addresses) if relayed else None
        turn_check = turn.start_checks(settings)
        try:
            gate = AddressGate(
                settings.ws_address_max, settings.ws_address_rate, settings.ws_address_burst
            )
            yield {
                "settings": settings,
                "store": store,
                "hub": front,
                "ice_servers": ice_servers,
                "ws_gate": gate,
                "relay_probe": probe,
            }
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await turn.stop_checks(turn_check)
            if local_hub is not None:
                await local_hub.shutdown()
            if cluster is not None:
                await cluster.close()  # a leader shuts its hub down and frees the lease
                await cluster.broker.close()
            for bridge in bridges:
                await bridge.stop()
            if probe is not None:
                await probe.close()
            await store.close()

    web = settings.web_root
    routes = [
        Route("/", pages.home),
        Route("/login", pages.login, methods=["GET", "POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/console", pages.console),
        Route("/account", admin.account, methods=["GET", "POST"]),
        Route("/admin/agents", admin.agents, methods=["GET", "POST"]),
        Route("/admin/audit", admin.audit),
        Route("/admin/audit.csv", admin.audit_csv),
        Route("/demo", pages.demo),
        Route("/widget", pages.widget),
        Route("/popup", pages.popup),
        Route("/share", phone.share_key, methods=["GET", "POST"]),
        Route("/check", check.check_page),
        Route("/check/ice", check.check_ice),
        Route("/check/relay", check.check_relay, methods=["POST"]),
        Route("/healthz", _health),
        WebSocketRoute("/ws", signaling.endpoint),
        Mount("/vendor", app=VendorAssets(web / "vendor")),
        Route("/app/bundle/{page}.bundle", pages.bundle_file),
        Mount("/app/coview", app=Assets(web / "coview", immutable=False)),
        Mount("/app/coview_web", app=Assets(web / "coview_web", immutable=False)),
        Mount("/app/pages", app=Assets(web / "pages", immutable=False)),
        Mount("/static", app=Assets(web / "static", immutable=False)),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                SecurityHeaders,
                policies={
                    # The widget learns the shop page it is on from the referrer.
                    "/demo": PathPolicy(referrer_policy="same-origin"),
                    "/widget": PathPolicy(
                        frame_ancestors=" ".join(("'self'", *settings.embed_origins))
                    ),
                },
            ),
            Middleware(BodyLimit),
        ],
        lifespan=lifespan,
    )


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok")
