"""Hostile HTTP, over real sockets to the real server (raw request lines, no client-side
normalisation): path traversal on every static mount, malformed and oversized bodies on
every POST, garbage requests.  Each gets a clean 4xx (or, for what is not HTTP at all, a
400 or a closed connection), never a 500, never a file from outside the mounts, and the
server keeps serving and logs no error.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_settings
from livesrv import live_server

from coview_server.limits import MAX_BODY_BYTES

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[3]
FORMS = ["/login", "/logout", "/share"]
MOUNTS = ["/static", "/vendor", "/app/coview", "/app/coview_web", "/app/pages"]
#: Text of files outside every mount, any of which in a body means a traversal worked.
CANARIES = [
    "root:x:0:0",  # /etc/passwd
    "[build-system]",  # pyproject.toml
    "{{",  # a Jinja template's source (web/templates/), never a rendered page
    "class Settings",  # server/coview_server/settings.py
    "SQLite format 3",  # the database
]


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    settings = make_settings(tmp_path_factory.mktemp("hostile"))
    with live_server(settings) as url:
        yield int(url.rsplit(":", 1)[1])


def raw(port: int, request: bytes) -> tuple[int | None, bytes]:
    """Send bytes as they are; (status or None if the server just closed, whole answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        try:
            s.sendall(request)
        except OSError:
            pass  # the server may stop reading an oversized request and close
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", out)
    return (int(found.group(1)) if found else None), out


def get(port: int, target: bytes, method: bytes = b"GET") -> tuple[int | None, bytes]:
    return raw(
        port, method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )


def post(port: int, path: str, body: bytes, *headers: str) -> tuple[int | None, bytes]:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if not any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return raw(port, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def assert_clean(status: int | None, answer: bytes, *, allow_close: bool = False) -> None:
    if status is None:
        assert allow_close and answer == b"", answer[:200]
        return
    assert 400 <= status < 500, answer[:300]
    text = answer.decode("latin-1")
    for canary in CANARIES:
        assert canary not in text, canary


def healthy(port: int) -> None:
    status, answer = get(port, b"/healthz")
    assert status == 200 and answer.endswith(b"ok")


# --- path traversal -------------------------------------------------------------------------

TRAVERSALS = [
    "/../templates/login.html",
    "/../../pyproject.toml",
    "/../../../../../../../../etc/passwd",
    "/..%2ftemplates%2flogin.html",
    "/%2e%2e/%2e%2e/pyproject.toml",
    "/%2E%2E%2F%2E%2E%2Fpyproject.toml",
    "/%252e%252e/%252e%252e/pyproject.toml",
    "/.%2e/.%2e/pyproject.toml",
    "/%c0%ae%c0%ae/%c0%ae%c0%ae/pyproject.toml",
    "/..\\..\\pyproject.toml",
    "/%5c..%5c..%5cpyproject.toml",
    "/....//....//pyproject.toml",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/%2Fetc/passwd",
    "/C:/Windows/win.ini",
    "/C:%5cWindows%5cwin.ini",
    "/coview.css%00.png",
    "/%00",
    "/.git/config",
    "/.hypothesis",
    "/../../var/coview.db",
    "/../../../" + "a/" * 200 + "../" * 203 + "etc/passwd",
    "/" + "x" * 5000,
    "/%ff%fe",
    "/?../../pyproject.toml",
    "/#/../../pyproject.toml",
]


@pytest.mark.parametrize("mount", MOUNTS)
def test_traversal_on_every_mount(port: int, mount: str, caplog: pytest.LogCaptureFixture) -> None:
    for path in TRAVERSALS:
        for method in (b"GET", b"HEAD"):
            status, answer = get(port, (mount + path).encode("latin-1"), method)
            assert_clean(status, answer)
    healthy(port)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "target",
    [
        b"/%2e%2e/etc/passwd",
        b"/static%2f..%2f..%2fpyproject.toml",
        b"/app/../pyproject.toml",
        b"/app/coview/../../templates/login.html",
        b"/vendor/../../pyproject.toml",
        b"http://127.0.0.1/etc/passwd",
        b"http://evil.example/static/../../pyproject.toml",
        b"*",
        b"../../etc/passwd",
        b"/static/coview.css/../../../pyproject.toml",
    ],
)
def test_odd_request_targets(port: int, target: bytes) -> None:
    status, answer = get(port, target)
    assert_clean(status, answer, allow_close=True)
    healthy(port)


@pytest.mark.parametrize(
    "line",
    [
        b"GET /static/\x00 HTTP/1.1",
        b"GET /static/a\rb HTTP/1.1",
        b"GET /static/ a HTTP/1.1",
        b"GET\t/static/coview.css HTTP/1.1",
        b"GET /static/coview.css HTTP/9.9",
        b"\xff\xfe\x00\x01",
        b"GET " + b"/" * 100_000 + b" HTTP/1.1",
        b"BREW /static/coview.css HTTP/1.1",
    ],
)
def test_garbage_requests(port: int, line: bytes) -> None:
    status, answer = raw(port, line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert_clean(status, answer, allow_close=True)
    healthy(port)


def test_a_real_file_is_still_served(port: int) -> None:
    status, answer = get(port, b"/static/coview.css")
    assert status == 200 and b"text/css" in answer


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE"])
def test_other_methods_on_static_files(port: int, method: bytes) -> None:
    status, answer = get(port, b"/static/coview.css", method)
    assert status == 405, answer[:200]


# --- hostile bodies -------------------------------------------------------------------------

FORM = "Content-Type: application/x-www-form-urlencoded"
MULTIPART = "Content-Type: multipart/form-data; boundary=xyz"
BODIES: list[tuple[bytes, tuple[str, ...]]] = [
    (b"", ()),
    (b"", (FORM,)),
    (b"\xff\xfe%%%=&&==%zz%", (FORM,)),
    (b"csrf=%ff%fe&email=%00&password=" + b"%" * 100, (FORM,)),
    (b"&" * 5000, (FORM,)),
    (b"a=1&" * 3000, (FORM,)),  # more fields than Starlette parses
    (b'{"email": "a@b", "password": "x"}', ("Content-Type: application/json",)),
    (b"{]", ("Content-Type: application/json",)),
    (b"\x00" * 100, ("Content-Type: text/plain",)),
    (b"garbage", ("Content-Type: multipart/form-data",)),  # no boundary
    (b"garbage", ("Content-Type: multipart/form-data; boundary=",)),
    (b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xyz--\r\n", (MULTIPART,)),
    (b"--xyz\r\n\r\n\r\n", (MULTIPART,)),
    (b'--xyz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n', (MULTIPART,)),
    (
        b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="../../x"\r\n\r\n'
        + b"x" * 1000
        + b"\r\n--xyz--\r\n",
        (MULTIPART,),
    ),
    (b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n' * 1200, (MULTIPART,)),
    (b"email=a", (FORM, "Content-Encoding: gzip")),
    (b"email=a", ("Content-Type: application/x-www-form-urlencoded; charset=utf-32",)),
]


@pytest.mark.parametrize("path", ["/login", "/logout", "/share"])
def test_malformed_bodies(port: int, path: str, caplog: pytest.LogCaptureFixture) -> None:
    for body, headers in BODIES:
        status, answer = post(port, path, body, *headers)
        if path == "/logout" and status == 303:
            continue  # no session to end: just sent to /login, whatever the body
        assert_clean(status, answer)
    healthy(port)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("path", ["/login", "/logout", "/share", "/static/coview.css", "/healthz"])
def test_oversized_bodies_get_413(port: int, path: str) -> None:
    big = b"a=" + b"x" * (MAX_BODY_BYTES + 1)
    status, answer = post(port, path, big, FORM)
    assert status == 413, answer[:200]
    # Declared huge, never sent: refused from the header alone.
    status, answer = post(port, path, b"", FORM, "Content-Length: 100000000000")
    assert status == 413, answer[:200]
    # Chunked, no declared length: refused once the limit is crossed.
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    status, answer = post(port, path, chunk * 40 + b"0\r\n\r\n", FORM, "Transfer-Encoding: chunked")
    # (what takes no body at all answers 405 without reading one)
    assert status == (413 if path in FORMS else 405), answer[:200]
    # A file upload is no different.
    upload = (
        b'--xyz\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n\r\n'
        + b"x" * (2 * MAX_BODY_BYTES)
        + b"\r\n--xyz--\r\n"
    )
    status, answer = post(port, path, upload, MULTIPART)
    assert status == 413, answer[:200]
    healthy(port)


@pytest.mark.parametrize(
    "length", ["abc", "-1", "1.5", "1e3", " ", "0x10", "99999999999999999999999"]
)
def test_bad_content_length(port: int, length: str) -> None:
    status, answer = post(port, "/login", b"email=a", FORM, f"Content-Length: {length}")
    assert_clean(status, answer, allow_close=True)
    healthy(port)


def test_a_body_at_the_limit_is_read(port: int) -> None:
    body = b"a=" + b"x" * (MAX_BODY_BYTES - 2)
    status, answer = post(port, "/login", body, FORM)
    assert status == 400 and b"session expired" in answer  # read, then refused: no CSRF


def test_login_still_works_after_all_that(port: int) -> None:
    status, answer = get(port, b"/login")
    assert status == 200
    cookie = re.search(rb"coview_csrf=([^;]+);", answer)
    field = re.search(rb'name="csrf" value="([^"]+)"', answer)
    assert cookie and field
    from conftest import ADMIN_EMAIL, ADMIN_PASSWORD

    form = f"email={ADMIN_EMAIL}&password={ADMIN_PASSWORD.replace(' ', '+')}&csrf=".encode()
    status, answer = post(
        port,
        "/login",
        form + field.group(1),
        FORM,
        "Cookie: coview_csrf=" + cookie.group(1).decode(),
    )
    assert status == 303, answer[:300]
