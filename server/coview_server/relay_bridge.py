"""The media relay as one more client of the hub.

The hub routes ``peer``/``offer``/``answer``/``ice``/``restart`` between two ends without
caring what they are; the relay (:class:`coview_server.relay.Relay`, an aiortc peer) is
given a :class:`~coview_server.hub.Conn` of role ``relay`` and speaks the same protocol
messages as a browser.  So the hub keeps its one authorisation and routing path, and the
relay can be tested by feeding it messages.  This module only moves messages both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from coview import protocol as P

from .hub import Conn, Hub, HubError
from .settings import Settings
from .tokens import new_token

log = logging.getLogger("coview.relay")


class RelayBridge:
    def __init__(self, hub: Hub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        # In-process and trusted: no send-queue limit (a full queue would close a browser).
        self.conn = Conn(id="relay-" + new_token()[:8], role="relay", queue=asyncio.Queue())
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._relay: Any = None

    async def start(self) -> bool:
        """Start the relay; ``False`` (with a warning) when aiortc cannot be loaded."""
        try:
            from .relay import Relay
        except ImportError as exc:  # pragma: no cover - aiortc is a dependency
            log.warning("media relay unavailable (%s); shares that fail directly will fail", exc)
            return False
        self._relay = Relay(
            self._emit,
            forward=self.settings.relay_forward,
            host_addresses=self.settings.relay_addresses,
        )
        self._tasks = [
            asyncio.create_task(self._to_relay()),
            asyncio.create_task(self._to_hub()),
        ]
        self.hub.relay = self.conn
        return True

    async def stop(self) -> None:
        self.hub.relay = None
        self.conn.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._relay is not None:
            await self._relay.close()
            self._relay = None

    def _emit(self, msg: dict[str, Any]) -> None:
        self._inbox.put_nowait(msg)

    async def _to_relay(self) -> None:
        while True:
            msg = await self.conn.queue.get()
            if msg is None:
                return
            self._relay.receive(msg)

    async def _to_hub(self) -> None:
        while True:
            msg = await self._inbox.get()
            try:
                # The same validation as a browser's message: the relay gets no shortcut.
                msg = P.validate(msg, P.C2S)
                await self.hub.handle(self.conn, msg)
            except (P.ProtocolError, HubError) as exc:
                # Usually a race with an end (the pc is gone); never fatal for the relay.
                log.debug("relay message %s refused: %s", msg.get("type"), exc)
            except Exception:
                log.exception("relay message %s failed", msg.get("type"))
