"""``/check`` and ``/check/ice``: the page renders, and the ICE servers are fresh, private
to the request and never cached; the TURN secret never leaves the server."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from conftest import make_settings
from starlette.testclient import TestClient

from coview_server.app import create_app

SECRET = "unit-check-secret-0123456789"
TURN = ["turn:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=tcp"]


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


def app_with(tmp_path: Path, **extra: object) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path, **extra)))


def test_ice_gives_fresh_credentials_per_request(tmp_path: Path) -> None:
    with app_with(
        tmp_path, stun_urls=["stun:127.0.0.1:3478"], turn_urls=TURN, turn_secrets=[SECRET]
    ) as client:
        first = client.get("/check/ice")
        second = client.get("/check/ice")
    for response in (first, second):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"].startswith("application/json")
        assert SECRET not in response.text
    a, b = first.json(), second.json()
    assert a["ice_transport_policy"] == "all"
    assert a["ice_servers"][0] == {"urls": ["stun:127.0.0.1:3478"]}
    turn_a, turn_b = a["ice_servers"][1], b["ice_servers"][1]
    assert turn_a["urls"] == TURN
    assert turn_a["username"] != turn_b["username"]
    assert turn_a["credential"] != turn_b["credential"]
    for entry in (turn_a, turn_b):  # valid TURN REST credentials for coturn
        digest = hmac.new(SECRET.encode(), entry["username"].encode(), hashlib.sha1).digest()
        assert entry["credential"] == base64.b64encode(digest).decode()


def test_ice_without_turn(tmp_path: Path) -> None:
    with app_with(tmp_path, ice_transport_policy="relay") as client:
        response = client.get("/check/ice")
    assert response.json() == {"ice_servers": [], "ice_transport_policy": "relay"}
    assert response.headers["cache-control"] == "no-store"


def test_check_page_is_a_micropython_page(tmp_path: Path) -> None:
    with app_with(tmp_path) as client:
        response = client.get("/check")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    # Its script: the page's bytecode bundle unpacked inline, or without mpy-cross its source.
    assert (
        '<script type="mpy" src="/app/pages/check.py?v=' in html
        or "import coview_page_check\n</script>" in html
    )
    assert "micropython.mjs" in html
    assert 'role="list"' in html and "Report for support" in html
    assert "content-security-policy" in response.headers
