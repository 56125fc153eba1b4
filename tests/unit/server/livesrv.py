"""A real uvicorn server for the app, in a thread of the test process, on a free 127.0.0.1 port.

For tests that need real sockets (raw HTTP request lines, many WebSockets from several
source addresses): TestClient cannot send those.  The options are the ones ``coview
serve`` passes to uvicorn.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from coview.protocol import MAX_MESSAGE_BYTES
from coview_server.app import create_app
from coview_server.settings import Settings


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a running server; stopped (lifespan included) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        server_header=False,
        ws_max_size=2 * MAX_MESSAGE_BYTES,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
