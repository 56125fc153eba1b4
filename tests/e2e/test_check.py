"""The network check page (``/check``) in Chromium, against a real coturn on loopback.

* with STUN and TURN (UDP and TCP) configured, every check passes: a reflexive candidate,
  and relayed candidates gathered through coturn over UDP and over TCP;
* with nothing configured the page says so and still reaches a verdict;
* the report for support holds every check, and "Copy report" puts it on the clipboard.

Elements are found by role and accessible name.
"""

from __future__ import annotations

import json
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from .conftest import Server, free_port, make_server
from .test_turn import SECRET, Coturn, coturn  # noqa: F401  (the coturn fixture)

LABELS = {
    "websocket": "Connection to the Coview server (WebSocket)",
    "stun": "Direct connections (STUN)",
    "turn_udp": "TURN relay over UDP",
    "turn_tcp": "TURN relay over TCP",
    "relay": "Coview's media relay",
    "capture": "Screen sharing in this browser",
}


def open_check(contexts: Any, server: Server) -> Page:
    ctx = contexts()
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page: Page = ctx.new_page()
    page.goto(server.url + "/check")
    page.wait_for_selector("body[data-done='1']", timeout=60000)
    return page


def item(page: Page, check: str) -> Any:
    checks = page.get_by_role("list", name="Network checks")
    return checks.get_by_role("listitem").filter(has_text=LABELS[check])


def report_text(page: Page) -> str:
    return str(page.get_by_role("textbox", name="Report for support").input_value())


def test_every_check_passes_with_coturn(contexts: Any, coturn: Coturn, tmp_path: Path) -> None:  # noqa: F811
    before = len(coturn.log())
    server = make_server(
        tmp_path,
        COVIEW_STUN_URLS=f"stun:127.0.0.1:{coturn.port}",
        COVIEW_TURN_URLS=f"{coturn.url('udp')},{coturn.url('tcp')}",
        COVIEW_TURN_SECRETS=SECRET,
    )
    try:
        page = open_check(contexts, server)
        for check in LABELS:
            expect(item(page, check)).to_contain_text(LABELS[check] + ": Passed")
        # On loopback coturn sees the host's own address (no NAT): Chromium drops that
        # duplicate srflx candidate, and the page tells the answer from the quick end of
        # gathering without error.
        expect(item(page, "stun")).to_contain_text("The STUN server answered")
        expect(item(page, "turn_udp")).to_contain_text(
            re.compile(r"Relayed address 127\.0\.0\.1:\d+")
        )
        expect(item(page, "turn_tcp")).to_contain_text(
            re.compile(r"Relayed address 127\.0\.0\.1:\d+")
        )
        expect(page.get_by_role("status")).to_have_text(
            "Screen sharing should work on this network."
        )
        report = report_text(page)
        for n, check in enumerate(LABELS, 1):
            assert f"{n}. {LABELS[check]}: Passed" in report, report
        assert "Browser: Chrome" in report and "Time: 20" in report
        assert "Verdict: Screen sharing should work on this network." in report
        assert SECRET not in report

        page.get_by_role("button", name="Copy report").click()
        expect(page.get_by_role("alert")).to_have_text(re.compile("Report copied"))
        assert page.evaluate("navigator.clipboard.readText()") == report
    finally:
        server.stop()
    log = coturn.log()[before:]
    # The page allocated relays with the credentials /check/ice minted, over UDP and TCP.
    assert log.count("incoming packet ALLOCATE processed, success") >= 2, log[-3000:]
    assert "tcp or tls connected to" in log, log[-3000:]
    # The WebSocket check sent no handshake: no visitor, no conversation was recorded.
    with sqlite3.connect(server.db) as db:
        assert db.execute("SELECT COUNT(*) FROM visitors").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone() == (0,)


def test_nothing_configured_still_reaches_a_verdict(contexts: Any, server: Server) -> None:
    page = open_check(contexts, server)
    expect(item(page, "websocket")).to_contain_text("Passed")
    expect(item(page, "stun")).to_contain_text("Not configured")
    expect(item(page, "stun")).to_contain_text("No STUN server configured.")
    expect(item(page, "turn_udp")).to_contain_text("Not configured")
    expect(item(page, "turn_tcp")).to_contain_text("Not configured")
    # The relay's test call decodes its moving test picture.
    expect(item(page, "relay")).to_contain_text(
        re.compile(r"Passed Received the relay's test picture in \d+ ms\.")
    )
    expect(item(page, "capture")).to_contain_text("Passed")
    expect(page.get_by_role("status")).to_contain_text("Coview's own media relay")
    report = report_text(page)
    for n, check in enumerate(LABELS, 1):
        assert f"{n}. {LABELS[check]}: " in report, report
    assert "Verdict: Direct connections may fail on this network" in report


def test_relay_turned_off_is_said_and_judged_without_it(contexts: Any, tmp_path: Path) -> None:
    server = make_server(tmp_path, COVIEW_MEDIA_RELAY="off")
    try:
        page = open_check(contexts, server)
        expect(item(page, "relay")).to_contain_text("Not configured")
        expect(item(page, "relay")).to_contain_text("The media relay is turned off")
        expect(page.get_by_role("status")).to_contain_text("No STUN or TURN server is configured")
    finally:
        server.stop()


def _post_offer(server: Server, body: bytes, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(
        server.url + "/check/relay", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_relay_test_call_refuses_foreign_pages_and_garbage(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    try:
        ok = {"Origin": server.url, "Content-Type": "application/json"}
        foreign = {"Origin": "http://evil.test", "Content-Type": "application/json"}
        status, text = _post_offer(server, b'{"sdp": "v=0"}', **foreign)
        assert status == 403 and "check page" in text
        assert _post_offer(server, b'{"sdp": "v=0"}', Origin=server.url)[0] == 415
        assert _post_offer(server, b"not json", **ok)[0] == 400
        assert _post_offer(server, json.dumps({"sdp": 5}).encode(), **ok)[0] == 400
        status, text = _post_offer(server, json.dumps({"sdp": "v=0\r\nx"}).encode(), **ok)
        assert status == 400 and "could not use this offer" in text
        assert _post_offer(server, b"{" + b" " * (70 * 1024) + b"}", **ok)[0] == 413
        # Six test calls a minute per address, the refused bodies above included: within
        # six more, the limit answers, and keeps answering.
        codes = [_post_offer(server, b"{}", **ok)[0] for _ in range(6)]
        assert codes[-2:] == [429, 429] and set(codes) == {400, 429}, codes
        status, text = _post_offer(server, b"{}", **ok)
        assert status == 429 and "wait a minute" in text
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_unreachable_servers_fail_within_the_timeout(contexts: Any, tmp_path: Path) -> None:
    # Nothing listens there: STUN and TURN fail by their timeout and the page finishes.
    port = free_port()
    server = make_server(
        tmp_path,
        COVIEW_STUN_URLS=f"stun:127.0.0.1:{port}",
        COVIEW_TURN_URLS=f"turn:127.0.0.1:{port},turn:127.0.0.1:{port}?transport=tcp",
        COVIEW_TURN_SECRETS=SECRET,
        COVIEW_TURN_CHECK_INTERVAL_S="0",
    )
    try:
        page = open_check(contexts, server)
        for check in ("stun", "turn_udp", "turn_tcp"):
            expect(item(page, check)).to_contain_text("Failed")
        expect(item(page, "websocket")).to_contain_text("Passed")
        # Only Coview's own relay gets the picture through.
        expect(item(page, "relay")).to_contain_text("Passed")
        expect(page.get_by_role("status")).to_contain_text("Coview's own media relay")
    finally:
        server.stop()
