"""The real Coview server plus the bench's own static pages, on one origin.

Run by bench/run.py as a subprocess (never imported by the server)::

    python bench/server.py --port N

It is ``coview serve`` (same ``create_app(settings)``, same uvicorn options) with one
addition: requests under ``/bench/`` are answered from ``bench/baseline/`` by Coview's own
``Assets`` app, behind the same ``SecurityHeaders`` middleware (so the plain-JS baseline
pages run under the same CSP as ours).  Everything else, WebSockets and the lifespan
included, goes to the unmodified Coview app, so the baseline talks to the same ``/ws``.
``/bench/popup-mpy.html`` is the PyScript floor: the popup's own page and PyScript head with
``baseline/popup_floor.py`` as its script, minus our files (see :class:`FloorPage`).
It also keeps a log of every HTTP answer (path, status, content coding), which the bench
reads at ``/_bench/log?since=N`` to count requests and 304 revalidations per page load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import uvicorn
from starlette.responses import HTMLResponse
from starlette.types import Message, Receive, Scope, Send

from coview.protocol import MAX_MESSAGE_BYTES
from coview_server import pages
from coview_server.app import create_app
from coview_server.security import SecurityHeaders
from coview_server.settings import Settings
from coview_server.static import Assets

BASELINE = Path(__file__).resolve().parent / "baseline"
PREFIX = "/bench"
FLOOR_PATH = PREFIX + "/popup-mpy.html"
LOG_PATH = "/_bench/log"  # what the server answered: [[path, status, content-encoding], ...]


class WithBench:
    """ASGI dispatcher: ``/bench/...`` to the baseline files, the rest to Coview."""

    def __init__(self, coview: object, settings: Settings, latency_ms: float = 0.0) -> None:
        self.coview = coview
        self.bench = SecurityHeaders(Assets(BASELINE, immutable=False))
        self.floor = SecurityHeaders(FloorPage(settings))
        self.log: list[tuple[str, int, str]] = []
        self.latency_s = latency_ms / 1000.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and self.latency_s and path != LOG_PATH:
            # --latency: one simulated network round trip before each request or WebSocket
            # is served (no bandwidth limit; loopback has no tc netem here).
            await asyncio.sleep(self.latency_s)
        if scope["type"] != "http":
            await self.coview(scope, receive, send)  # type: ignore[operator]
            return
        if path == LOG_PATH:
            await self._send_log(scope, send)
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                coding = headers.get(b"content-encoding", b"").decode()
                self.log.append((path, int(message["status"]), coding))
            await send(message)

        if path == FLOOR_PATH:
            await self.floor(scope, receive, logged)
        elif path.startswith(PREFIX + "/"):
            scope = dict(scope, root_path=scope.get("root_path", "") + PREFIX)
            await self.bench(scope, receive, logged)
        else:
            await self.coview(scope, receive, logged)  # type: ignore[operator]

    async def _send_log(self, scope: Scope, send: Send) -> None:
        query = dict(
            p.split("=", 1) for p in scope.get("query_string", b"").decode().split("&") if "=" in p
        )
        since = int(query.get("since", "0"))
        body = json.dumps({"next": len(self.log), "entries": self.log[since:]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class FloorPage:
    """``/popup`` itself (template, PyScript head, interpreter: the same URLs, preloads and
    cache lifetimes) with ``baseline/popup_floor.py`` as its page script and no file of ours."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.code = (BASELINE / "popup_floor.py").read_text(encoding="utf-8")
        assert "</" not in self.code  # the template writes it unescaped into <script>

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.settings
        config = json.loads(pages.pyscript_config(settings, "mpy", "popup"))
        config["files"] = {}
        head = pages.pyscript_head(settings, "mpy", "popup")
        head["preload_fetch"] = [f for f in head["preload_fetch"] if f[1] != "low"]  # ours
        template = pages._env(str(settings.web_root / "templates")).get_template("popup.html")
        html = template.render(
            config=json.dumps(config), head=head, script_type="mpy", script_code=self.code
        )
        response = HTMLResponse(html, headers={"Cache-Control": "no-store"})  # as /popup
        await response(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--latency", type=float, default=0.0, help="ms added per request")
    args = parser.parse_args()
    # Database, admin and the rest come from COVIEW_* variables, as for `coview serve`.
    settings = Settings.load(
        None, {"host": "127.0.0.1", "port": args.port, "log_level": args.log_level}
    )
    uvicorn.run(
        WithBench(create_app(settings), settings, args.latency),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        ws_max_size=2 * MAX_MESSAGE_BYTES,
    )


if __name__ == "__main__":
    main()
