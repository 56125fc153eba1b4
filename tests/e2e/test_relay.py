"""The server's media relay end to end, in the loopback-only namespace.

With ``media_relay = "always"`` every byte of the share passes through the aiortc relay
inside the Coview server: the visitor's popup sends to it, it forwards to the agent.  The
agent must still see the shop's colours, the frame counter must keep moving, and both sides
must say the media is relayed.  (The automatic fallback, where the peers cannot reach each
other, is proven on the namespace lab in ``test_lab.py``.)

aioice never gathers on 127.0.0.1 by itself: the e2e servers tell the relay its address.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from .conftest import make_server
from .flows import assert_sees_shop, go_live, start_chat, wait_frames_advance


def test_share_through_the_relay_when_the_policy_says_always(contexts: Any, tmp_path: Path) -> None:
    server = make_server(tmp_path, COVIEW_MEDIA_RELAY="always")
    try:
        visitor, agent, _ = start_chat(contexts(), contexts(), server)
        popup = go_live(visitor, agent)
        assert_sees_shop(agent)
        wait_frames_advance(agent, frames=5)  # the shop is static: ~1 fps
        quality = agent.page.get_by_role("table", name="Connection quality")
        expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text(
            "Relayed (server)", timeout=10000
        )
        expect(popup.get_by_text("Connection: through the support server's relay.")).to_be_visible()

        # Stopping ends it on both sides, and a new share through the relay works again.
        agent.page.get_by_role("button", name="Stop screen share").click()
        expect(popup.get_by_role("status")).to_contain_text("The agent ended", timeout=2000)
        popup.close()
        # The relay freed the ended share's peer connections and tracks (not only at exit).
        deadline = time.monotonic() + 5
        while server.log().count(" freed") < 1 and time.monotonic() < deadline:
            agent.page.wait_for_timeout(100)
        assert server.log().count(" freed") == 1, server.log()[-3000:]
        popup = go_live(visitor, agent)
        assert_sees_shop(agent)
        wait_frames_advance(agent, frames=3)
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log
