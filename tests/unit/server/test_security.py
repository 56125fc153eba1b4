"""coview_server.security: SecurityHeaders middleware and check_origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from coview_server.security import (
    DEFAULT_CSP,
    PathPolicy,
    SecurityHeaders,
    build_csp,
    check_origin,
    parse_csp,
)
from coview_server.static import Assets


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def own_headers(request: Request) -> Response:
    return PlainTextResponse(
        "own",
        headers={
            "Referrer-Policy": "origin",
            "Content-Security-Policy": "img-src 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def make_client(tmp_path: Path, **kwargs: object) -> TestClient:
    (tmp_path / "a.js").write_text("1")
    app = Starlette(
        routes=[
            Route("/", hello),
            Route("/demo", hello),
            Route("/demo/page", hello),
            Route("/demonstration", hello),
            Route("/widget", hello),
            Route("/widget/inner", hello),
            Route("/own", own_headers),
            Route("/boom", boom),
            WebSocketRoute("/ws", echo),
            Mount("/vendor", app=Assets(tmp_path, immutable=True)),
        ]
    )
    return TestClient(SecurityHeaders(app, **kwargs), raise_server_exceptions=False)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def policy_client(tmp_path: Path) -> Iterator[TestClient]:
    policies = {
        "/demo": PathPolicy(referrer_policy="same-origin"),
        "/widget": PathPolicy(frame_ancestors="'self' https://shop.example"),
        "/widget/inner": PathPolicy(coop="same-origin", frame_ancestors="'none'"),
        "/vendor": PathPolicy(csp="default-src 'none'"),
    }
    with make_client(tmp_path, policies=policies, coop="same-origin-allow-popups") as c:
        yield c


def test_default_headers(client: TestClient) -> None:
    r = client.get("/")
    assert r.headers["content-security-policy"] == DEFAULT_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "cross-origin-opener-policy" not in r.headers
    assert "x-frame-options" not in r.headers


def test_default_csp_is_the_strict_one() -> None:
    d = parse_csp(DEFAULT_CSP)
    assert d["script-src"] == "'self' 'wasm-unsafe-eval'"
    assert "'unsafe-eval'" not in DEFAULT_CSP and "'unsafe-inline'" not in DEFAULT_CSP
    assert d["style-src"] == "'self'"
    assert d["connect-src"] == "'self'"
    assert d["frame-ancestors"] == "'self'"
    assert d["object-src"] == "'none'" and d["base-uri"] == "'none'"


@pytest.mark.parametrize("path", ["/", "/nope", "/vendor/a.js", "/vendor/missing", "/boom"])
def test_every_response_gets_headers(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (200, 404, 500)
    assert r.headers["content-security-policy"] == DEFAULT_CSP
    assert r.headers["x-content-type-options"] == "nosniff"


def test_405_and_head_get_headers(client: TestClient) -> None:
    assert client.post("/vendor/a.js").headers["referrer-policy"] == "no-referrer"
    assert client.head("/").headers["content-security-policy"] == DEFAULT_CSP


def test_path_prefix_referrer(policy_client: TestClient) -> None:
    assert policy_client.get("/demo").headers["referrer-policy"] == "same-origin"
    assert policy_client.get("/demo/page").headers["referrer-policy"] == "same-origin"
    # whole segments only
    assert policy_client.get("/demonstration").headers["referrer-policy"] == "no-referrer"
    assert policy_client.get("/").headers["referrer-policy"] == "no-referrer"


def test_path_prefix_frame_ancestors(policy_client: TestClient) -> None:
    widget = parse_csp(policy_client.get("/widget").headers["content-security-policy"])
    assert widget["frame-ancestors"] == "'self' https://shop.example"
    # everything else unchanged
    rest = {k: v for k, v in widget.items() if k != "frame-ancestors"}
    assert rest == {k: v for k, v in parse_csp(DEFAULT_CSP).items() if k != "frame-ancestors"}
    home = parse_csp(policy_client.get("/").headers["content-security-policy"])
    assert home["frame-ancestors"] == "'self'"


def test_longest_prefix_wins(policy_client: TestClient) -> None:
    r = policy_client.get("/widget/inner")
    assert parse_csp(r.headers["content-security-policy"])["frame-ancestors"] == "'none'"
    assert r.headers["cross-origin-opener-policy"] == "same-origin"


def test_coop_default_and_override(policy_client: TestClient) -> None:
    assert policy_client.get("/").headers["cross-origin-opener-policy"] == (
        "same-origin-allow-popups"
    )
    assert policy_client.get("/widget").headers["cross-origin-opener-policy"] == (
        "same-origin-allow-popups"
    )


def test_coop_empty_string_sends_none(tmp_path: Path) -> None:
    with make_client(tmp_path, coop="same-origin", policies={"/widget": PathPolicy(coop="")}) as c:
        assert c.get("/").headers["cross-origin-opener-policy"] == "same-origin"
        assert "cross-origin-opener-policy" not in c.get("/widget").headers


def test_whole_csp_override(policy_client: TestClient) -> None:
    r = policy_client.get("/vendor/a.js")
    assert r.headers["content-security-policy"] == "default-src 'none'"


def test_app_headers_kept_and_csp_added(client: TestClient) -> None:
    r = client.get("/own")
    assert r.headers["referrer-policy"] == "origin"
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    # Both CSPs are sent (browsers enforce both): the app can only tighten ours.
    assert r.headers.get_list("content-security-policy") == ["img-src 'none'", DEFAULT_CSP]


def test_websocket_passes_through(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hi"


def test_prefix_must_be_absolute() -> None:
    with pytest.raises(ValueError):
        SecurityHeaders(Starlette(), policies={"demo": PathPolicy()})


def test_parse_build_roundtrip() -> None:
    d = parse_csp(DEFAULT_CSP)
    assert build_csp(d) == DEFAULT_CSP
    assert parse_csp(" Default-Src 'self' ;; img-src data: ")["default-src"] == "'self'"
    assert build_csp({"upgrade-insecure-requests": ""}) == "upgrade-insecure-requests"


# -- check_origin -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", set(), True),
        ("http://coview.example", "coview.example", set(), True),
        ("https://coview.example", "coview.example", set(), True),
        ("https://COVIEW.example", "coview.EXAMPLE", set(), True),
        ("https://coview.example:443", "coview.example", set(), True),
        ("https://coview.example", "coview.example:443", set(), True),
        ("http://[::1]:8000", "[::1]:8000", set(), True),
        # another port, host or a non-default port without one in Host
        ("http://127.0.0.1:8001", "127.0.0.1:8000", set(), False),
        ("http://localhost:8000", "127.0.0.1:8000", set(), False),
        ("https://coview.example:8443", "coview.example", set(), False),
        ("https://evil.example", "coview.example", set(), False),
        ("https://coview.example.evil.example", "coview.example", set(), False),
        # the allow list
        ("https://shop.example", "coview.example", {"https://shop.example"}, True),
        ("https://shop.example", "coview.example", {"https://SHOP.example:443/"}, True),
        ("http://shop.example", "coview.example", {"https://shop.example"}, False),
        ("https://shop.example:8443", "coview.example", {"https://shop.example"}, False),
        # malformed or opaque
        ("null", "coview.example", {"null"}, False),
        ("", "coview.example", set(), False),
        ("coview.example", "coview.example", set(), False),
        ("file:///etc", "coview.example", set(), False),
        ("https://coview.example/path", "coview.example", set(), False),
        ("https://user@coview.example", "coview.example", set(), False),
        ("https://coview.example https://x.example", "coview.example", set(), False),
        ("http://coview.example:99999", "coview.example:99999", set(), False),
        ("http://coview.example:80", "coview.example:notaport", set(), False),
        ("http://coview.example", "", set(), False),
    ],
)
def test_check_origin(origin: str, host: str, allowed: set[str], ok: bool) -> None:
    assert check_origin({"origin": origin}, allowed, host) is ok


def test_check_origin_missing_origin() -> None:
    assert check_origin({}, {"https://shop.example"}, "coview.example") is False


def test_check_origin_header_casing() -> None:
    assert check_origin({"Origin": "https://coview.example"}, set(), "coview.example")


def test_check_origin_with_starlette_headers() -> None:
    from starlette.datastructures import Headers

    headers = Headers(raw=[(b"origin", b"http://127.0.0.1:9000"), (b"host", b"127.0.0.1:9000")])
    assert check_origin(headers, set(), headers["host"])
