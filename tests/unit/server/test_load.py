"""A short load run: bench/load.py's clients against the real server on a 127.0.0.1 port.

50 share sessions at once (visitor, agent console, popup; chat, offer/answer/ice routed by
``pc``, pings, ``share_stop``), then idle sockets, each asserting that every routed
message arrived exactly once where it was meant to and nowhere else.  Longer and larger
runs: ``bench/load.py`` (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import make_settings
from livesrv import live_server

from bench import load

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


def _clean(report: dict[str, object]) -> None:
    assert report["lost"] == 0, report
    assert report["misrouted"] == 0, report
    assert report["duplicated"] == 0, report
    assert report["foreign"] == 0, report
    assert report["errors"] == {}, report


def _server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_fifty_share_sessions_lose_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, media_relay="off")
    agents = asyncio.run(load.create_agents(settings.database_url, 5))
    # A chat per side in the hold: chats cost the server a dozen queries each.
    opts = load.Options(duration=1.5, chat_every=1.5, ping_every=0.5, ramp=200.0, concurrency=50)
    with live_server(settings) as url:
        report = asyncio.run(load.run_sessions(url, agents, 50, opts))
    _clean(report)
    assert report["held"] == report["held_at_end"] == report["ended_cleanly"] == 50
    assert report["peak_sockets"] == 50 * 2 + 5  # visitor and popup per session, 5 consoles
    # Per session: the broadcast first chat, 8 negotiation messages, chats both ways.
    latency = report["latency"]
    assert isinstance(latency, dict)
    assert latency["negotiation"]["n"] == 50 * 8
    assert latency["broadcast"]["n"] == 50 * 5
    assert latency["chat"]["n"] >= 50
    assert latency["ping"]["n"] >= 50 * 2
    assert _server_errors(caplog) == []


def test_idle_sockets_all_answered(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path)
    opts = load.Options(duration=1.5, ping_every=0.5, ramp=500.0, concurrency=100)
    with live_server(settings) as url:
        report = asyncio.run(load.run_idle(url, 200, opts))
    _clean(report)
    assert report["held"] == report["held_at_end"] == report["peak_sockets"] == 200
    latency = report["latency"]
    assert isinstance(latency, dict)
    # Every socket's set-up ping was answered (a socket whose pong is missing fails its
    # set-up); how many more fit in the hold depends on the machine's load, not on us.
    assert latency["ping"]["n"] >= 200
    assert _server_errors(caplog) == []
