"""``/share`` through the real app: the form, CSRF, every refusal's words, and a good key
leading to the same popup handshake as a chat share."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_settings
from starlette.testclient import TestClient
from test_pages import Elements, csrf_of, set_cookie_headers
from test_signaling import Sock, connect, login

from coview import protocol as P
from coview_server import phone
from coview_server.app import create_app
from coview_server.security import parse_csp

pytestmark = pytest.mark.timeout(30)

UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


def post_key(client: TestClient, key: str, csrf: str | None = "fetch") -> httpx.Response:
    data = {"key": key}
    if csrf == "fetch":
        csrf = csrf_of(client.get("/share").text)
    if csrf is not None:
        data["csrf"] = csrf
    return client.post("/share", data=data, headers={"user-agent": UA}, follow_redirects=False)


def alert(response: httpx.Response) -> str:
    match = re.search(r'<p class="error" role="alert">([^<]*)</p>', response.text)
    assert match, response.text
    return match.group(1).replace("&#39;", "'")


@contextmanager
def agent_socket(client: TestClient) -> Iterator[Sock]:
    login(client)
    with connect(client) as sock:
        sock.send("handshake", versions=["1"], role="agent")
        assert sock.recv()["type"] == "welcome"
        yield sock


def until(sock: Sock, mtype: str) -> dict[str, Any]:
    for _ in range(50):
        msg = sock.recv()
        if msg["type"] == mtype:
            return msg
    raise AssertionError(f"no {mtype}")


def start_phone_share(agent: Sock) -> dict[str, Any]:
    agent.send("phone_share_start")
    return until(agent, "phone_share_key")


def test_the_form_has_a_labelled_key_field_and_csrf(client: TestClient) -> None:
    response = client.get("/share")
    assert response.status_code == 200
    page = Elements(response.text)
    assert page.find("label", for_="key") and page.find("input", id="key", name="key")
    assert page.find("input", id="key")[0]["inputmode"] == "numeric"
    assert page.find("form", method="post", action="/share")
    assert "6-digit key" in response.text and "A key works once, for 5 minutes" in response.text
    (cookie,) = set_cookie_headers(response, phone.CSRF_COOKIE)
    assert "HttpOnly" in cookie and "Path=/share" in cookie and "SameSite=strict" in cookie
    assert csrf_of(response.text) in cookie
    csp = parse_csp(response.headers["content-security-policy"])
    assert csp["script-src"] == "'self' 'wasm-unsafe-eval'" and "<script" not in response.text
    assert response.headers["cache-control"] == "no-store"


def test_a_form_without_its_token_is_refused(client: TestClient) -> None:
    assert alert(post_key(client, "123456", csrf=None)) == phone.EXPIRED_FORM_TEXT
    response = post_key(client, "123456", csrf="forged")
    assert response.status_code == 400 and alert(response) == phone.EXPIRED_FORM_TEXT


@pytest.mark.parametrize("typed", ["12345", "1234567", "abcdef", "", "1" * 100])
def test_a_malformed_key_is_explained(client: TestClient, typed: str) -> None:
    response = post_key(client, typed)
    assert response.status_code == 400
    assert alert(response) == "Type the 6 digits of the key, for example 123 456."


def test_the_whole_flow_and_the_same_words_for_every_dead_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client, agent_socket(client) as sock:
        key = start_phone_share(sock)["key"]
        generic = phone.wrong_text(settings)
        assert generic.startswith("That key is not valid. Check the digits with the agent.")

        never = "000000" if key != "000000" else "000001"
        response = post_key(client, never)
        assert (response.status_code, alert(response)) == (400, generic)
        assert key not in response.text

        response = post_key(client, key[:3] + " " + key[3:])  # as the console shows it
        assert response.status_code == 303
        location = response.headers["location"]
        match = re.fullmatch(r"/popup#share=([^&]+)&t=(.+)", location)
        assert match, location
        (spent,) = set_cookie_headers(response, phone.SPENT_COOKIE)
        assert "HttpOnly" in spent and "Path=/share" in spent and key not in spent
        state = until(sock, "share_state")
        while state["state"] != "accepted":  # requested, then one wrong key noted
            state = until(sock, "share_state")
        assert (state["state"], state["note"]) == ("accepted", "The caller entered the key.")

        # The popup connects with its token exactly as a chat visitor's does.
        with connect(client) as popup:
            popup.send("handshake", versions=["1"], role="sharer", token=match.group(2))
            welcome = popup.recv()
            assert welcome["type"] == "welcome" and welcome["info"]["share"] == match.group(1)
            assert welcome["info"]["agent_name"]

            # This browser spent the key: it is told so.
            response = post_key(client, key)
            assert alert(response).startswith("You have already used this key")
            # Any other browser gets the same words as for a key that never existed.
            client.cookies.delete(phone.SPENT_COOKIE, path="/share")
            response = post_key(client, key)
            assert (response.status_code, alert(response)) == (400, generic)


def test_too_many_attempts_from_one_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, share_key_address_limit=2)
    with TestClient(create_app(settings)) as client:
        assert post_key(client, "111111").status_code == 400
        assert post_key(client, "222222").status_code == 400
        response = post_key(client, "333333")
        assert response.status_code == 429 and alert(response) == phone.RATE_LIMITED_TEXT
        # Malformed input and missing tokens are not attempts at a key.
        assert alert(post_key(client, "12")).startswith("Type the 6 digits")


def test_phone_share_messages_follow_the_protocol() -> None:
    assert P.MESSAGES["phone_share_start"][0] == P.C2S
    assert P.MESSAGES["phone_share_key"][0] == P.S2C
