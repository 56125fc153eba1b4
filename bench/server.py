"""The real Coview server plus the bench's own static pages, on one origin.

Run by bench/run.py as a subprocess (never imported by the server)::

    python bench/server.py --port N

It is ``coview serve`` (same ``create_app(settings)``, same uvicorn options) with one
addition: requests under ``/bench/`` are answered from ``bench/baseline/`` by Coview's own
``Assets`` app, behind the same ``SecurityHeaders`` middleware (so the plain-JS baseline
pages run under the same CSP as ours).  Everything else, WebSockets and the lifespan
included, goes to the unmodified Coview app, so the baseline talks to the same ``/ws``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.types import Receive, Scope, Send

from coview.protocol import MAX_MESSAGE_BYTES
from coview_server.app import create_app
from coview_server.security import SecurityHeaders
from coview_server.settings import Settings
from coview_server.static import Assets

BASELINE = Path(__file__).resolve().parent / "baseline"
PREFIX = "/bench"


class WithBench:
    """ASGI dispatcher: ``/bench/...`` to the baseline files, the rest to Coview."""

    def __init__(self, coview: object) -> None:
        self.coview = coview
        self.bench = SecurityHeaders(Assets(BASELINE, immutable=False))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(PREFIX + "/"):
            scope = dict(scope, root_path=scope.get("root_path", "") + PREFIX)
            await self.bench(scope, receive, send)
            return
        await self.coview(scope, receive, send)  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    # Database, admin and the rest come from COVIEW_* variables, as for `coview serve`.
    settings = Settings.load(None, {"host": "127.0.0.1", "port": args.port,
                                    "log_level": args.log_level})
    uvicorn.run(
        WithBench(create_app(settings)),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        ws_max_size=2 * MAX_MESSAGE_BYTES,
    )


if __name__ == "__main__":
    main()
