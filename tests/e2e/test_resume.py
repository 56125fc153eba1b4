"""A live share survives signaling going away (docs/protocol.md, Reconnect and resume):

* the server restarts mid-share: the pages reconnect, the share window resumes with its
  credential, and the agent keeps seeing the shop on the *same* peer connection;
* every page's WebSocket is reset at once (a network blip): the same;
* the agent reloads the console: it reopens the conversation, watches again and gets
  the running capture on a new peer connection.

In each, the visitor picked once (the page's ``getDisplayMedia`` calls are counted),
pixels keep arriving at the agent, and signaling works afterwards (a stop ends the share
on both sides within 2 s).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from .conftest import Server, make_server
from .flows import (
    RECORD_PEER_CONNECTIONS,
    Agent,
    assert_sees_shop,
    go_live,
    start_chat,
    wait_frames_advance,
)

COUNT_PICKS = """(() => {
  const md = navigator.mediaDevices;
  if (!md || !md.getDisplayMedia || window.__coviewPicks !== undefined) return;
  const pick = md.getDisplayMedia.bind(md);
  window.__coviewPicks = 0;
  md.getDisplayMedia = (c) => { window.__coviewPicks += 1; return pick(c); };
})();"""

SS = shutil.which("ss") or "/usr/bin/ss"


def _picks(popup: Page) -> int:
    return int(popup.evaluate("window.__coviewPicks"))


def _peer_connections(page: Page) -> list[str]:
    states: list[str] = page.evaluate(
        "(window.__coviewPeerConnections || []).map((pc) => pc.connectionState)"
    )
    return states


def _live_share(contexts: Any, server: Server) -> tuple[Agent, Page]:
    script = COUNT_PICKS + RECORD_PEER_CONNECTIONS
    visitor, agent, _ = start_chat(contexts(script), contexts(script), server)
    popup = go_live(visitor, agent)
    assert_sees_shop(agent)
    wait_frames_advance(agent)
    assert _picks(popup) == 1 and _peer_connections(popup) == ["connected"]
    return agent, popup


def _still_live_and_working(agent: Agent, popup: Page) -> None:
    """Signaling is back on both sides, the picture moves, nothing was picked again."""
    expect(agent.page.get_by_text("Connected", exact=True)).to_be_visible(timeout=20000)
    expect(popup.get_by_role("status")).to_have_text("You are sharing your screen.")
    expect(agent.share_status()).to_contain_text("Live")
    expect(agent.share_status()).not_to_contain_text("dropped")
    wait_frames_advance(agent)
    assert_sees_shop(agent)
    assert _picks(popup) == 1
    agent.page.get_by_role("button", name="Stop screen share").click()
    expect(popup.get_by_role("status")).to_contain_text("The agent ended", timeout=2000)


def test_a_server_restart_mid_share_keeps_the_picture_without_a_new_pick(
    contexts: Any, tmp_path: Path
) -> None:
    server = make_server(tmp_path)
    try:
        agent, popup = _live_share(contexts, server)
        server.restart()  # SIGTERM: sockets closed with 1012, the share row stays open
        _still_live_and_working(agent, popup)
        # The direct peer connection was rebound, never replaced.
        assert len(_peer_connections(popup)) == 1
        assert "resumable" in server.log()
    finally:
        server.stop()


def test_every_websocket_reset_at_once_resumes_the_share(contexts: Any, tmp_path: Path) -> None:
    server = make_server(tmp_path)
    try:
        agent, popup = _live_share(contexts, server)
        # Reset every connection the browsers hold to the server (RST, no close frame):
        # what the server and the pages see when the network drops under them.
        subprocess.run(
            [SS, "-K", "dst", "127.0.0.1", "dport", "=", str(server.port)],
            check=True,
            capture_output=True,
        )
        _still_live_and_working(agent, popup)
        assert len(_peer_connections(popup)) == 1  # the same one, never replaced
    finally:
        server.stop()


def test_a_window_back_after_its_share_ended_says_it_ended_and_stops_capturing(
    contexts: Any, tmp_path: Path
) -> None:
    """The share ended while its window was away (here in the database while the server was
    down; another process of a deployment can end it so): the window's resume is refused,
    and it says the share ended and stops capturing, not only that it "cannot share"."""
    server = make_server(tmp_path)
    try:
        _agent, popup = _live_share(contexts, server)
        server.stop()
        with sqlite3.connect(server.db) as db:
            db.execute(
                "UPDATE shares SET state = 'ended', ended_at = ?, end_reason = ?"
                " WHERE ended_at IS NULL",
                (time.time(), "stopped_by_viewer"),
            )
        db.close()
        server.start()
        expect(popup.get_by_role("status")).to_have_text(
            "The screen share has ended. You can close this window.", timeout=20000
        )
        expect(popup.get_by_role("alert")).to_contain_text("already ended")
        expect(popup.get_by_role("button", name="Stop sharing")).to_be_hidden()
        assert popup.evaluate("document.getElementById('preview').srcObject === null")
    finally:
        server.stop()


def test_an_agent_reloading_the_console_returns_to_the_live_share(
    contexts: Any, tmp_path: Path
) -> None:
    server = make_server(tmp_path)
    try:
        agent, popup = _live_share(contexts, server)
        agent.page.reload()
        agent.page.wait_for_selector("body[data-ready='1']", timeout=30000)
        # Back in the same conversation and tab, on a new peer connection to the capture.
        expect(agent.share_status()).to_contain_text("Live", timeout=20000)
        _still_live_and_working(agent, popup)
        assert len(_peer_connections(popup)) == 2
    finally:
        server.stop()
