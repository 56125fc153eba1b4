"""HTML pages: login and logout with CSRF, the console gate, PyScript configuration, headers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from starlette.testclient import TestClient

from coview_server import pages
from coview_server.app import create_app
from coview_server.security import parse_csp
from coview_server.settings import Settings
from coview_server.signaling import SESSION_COOKIE

GENERIC = "Wrong email or password."
REPO = Path(__file__).resolve().parents[3]
WEB = REPO / "web"


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


class Elements(HTMLParser):
    """Every start tag with its (unescaped) attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]


def csrf_of(html: str) -> str:
    found = Elements(html).find("input", name="csrf", type="hidden")
    assert len(found) == 1, html
    value = found[0]["value"]
    assert value
    return value


def post_login(
    client: TestClient,
    email: str = ADMIN_EMAIL,
    password: str = ADMIN_PASSWORD,
    csrf: str | None = "fetch",
) -> httpx.Response:
    data = {"email": email, "password": password}
    if csrf == "fetch":
        csrf = csrf_of(client.get("/login").text)
    if csrf is not None:
        data["csrf"] = csrf
    return client.post("/login", data=data, follow_redirects=False)


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]


# --- login -----------------------------------------------------------------------------


def test_login_page_has_labelled_fields_and_csrf(client: TestClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    doc = Elements(response.text)
    labels = {a["for"] for a in doc.find("label")}
    for field, kind in (("email", "email"), ("password", "password")):
        (inp,) = doc.find("input", name=field)
        assert inp["type"] == kind and inp["id"] in labels
        assert "required" in inp
    (form,) = doc.find("form")
    assert form["method"] == "post" and form["action"] == "/login"
    token = csrf_of(response.text)
    cookie = set_cookie_headers(response, pages.CSRF_COOKIE)
    assert len(cookie) == 1
    assert cookie[0].startswith(f"{pages.CSRF_COOKIE}={token};")
    attrs = cookie[0].lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/login" in attrs


def test_login_without_csrf_is_refused(client: TestClient) -> None:
    client.get("/login")  # has the cookie, does not send the form field
    response = post_login(client, csrf=None)
    assert response.status_code == 400
    assert SESSION_COOKIE not in client.cookies


def test_login_with_wrong_csrf_is_refused(client: TestClient) -> None:
    client.get("/login")
    response = post_login(client, csrf="not-the-token")
    assert response.status_code == 400
    assert not set_cookie_headers(response, SESSION_COOKIE)


def test_login_without_csrf_cookie_is_refused(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    client.cookies.clear()
    response = post_login(client, csrf=token)
    assert response.status_code == 400
    assert not set_cookie_headers(response, SESSION_COOKIE)


def test_wrong_password_gets_generic_401(client: TestClient) -> None:
    wrong = post_login(client, password="not the password")
    unknown = post_login(client, email="nobody@example.com")
    malformed = post_login(client, email="not an email")
    for response in (wrong, unknown, malformed):
        assert response.status_code == 401
        (alert,) = re.findall(r'<p class="error" role="alert">([^<]*)</p>', response.text)
        assert alert == GENERIC
        assert not set_cookie_headers(response, SESSION_COOKIE)
        # The form is shown again, with a fresh token, ready for another try.
        assert csrf_of(response.text)
    assert 'value="nobody@example.com"' in unknown.text  # the email is kept
    assert ADMIN_PASSWORD not in wrong.text and "not the password" not in wrong.text


def test_five_wrong_passwords_lock_the_account(client: TestClient) -> None:
    for _ in range(5):
        assert post_login(client, password="wrong password").status_code == 401
    locked = post_login(client)  # even the right password is refused for now
    assert locked.status_code == 429
    assert "locked" in locked.text
    assert not set_cookie_headers(locked, SESSION_COOKIE)
    # Unknown accounts are never "locked": that would reveal which exist.
    for _ in range(6):
        assert post_login(client, email="ghost@example.com").status_code == 401


def test_too_many_attempts_from_one_address(client: TestClient) -> None:
    for i in range(pages.LOGIN_MAX_PER_WINDOW):
        assert post_login(client, email=f"user{i}@example.com").status_code == 401
    response = post_login(client)
    assert response.status_code == 429
    assert "Too many attempts" in response.text


def test_correct_login_sets_strict_session_cookie(client: TestClient) -> None:
    response = post_login(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"
    (cookie,) = set_cookie_headers(response, SESSION_COOKIE)
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs
    assert "samesite=strict" in attrs
    assert "path=/" in attrs
    assert "secure" not in attrs  # served over plain HTTP in this test
    assert len(cookie.split(";")[0].split("=", 1)[1]) >= 32
    # The one-use CSRF cookie of the form is cleared.
    csrf_cookie = set_cookie_headers(response, pages.CSRF_COOKIE)
    assert csrf_cookie and "max-age=0" in csrf_cookie[0].lower()
    assert client.get("/console", follow_redirects=False).status_code == 200
    # A logged-in user asking for the login form goes to the console.
    again = client.get("/login", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/console"


def test_email_is_case_insensitive(client: TestClient) -> None:
    assert post_login(client, email="  ADMIN@Coview.Local ").status_code == 303


def test_secure_cookies_when_configured(tmp_path: Path) -> None:
    settings = Settings.load(
        overrides={
            "database_url": "sqlite+aiosqlite:///" + str(tmp_path / "db.sqlite"),
            "admin_password": ADMIN_PASSWORD,
            "secure_cookies": True,
        },
        environ={},
    )
    with TestClient(create_app(settings)) as client:
        page = client.get("/login")
        assert "secure" in set_cookie_headers(page, pages.CSRF_COOKIE)[0].lower()
        # httpx will not send a Secure cookie over http: store the token as a plain cookie.
        token = csrf_of(page.text)
        client.cookies.set(pages.CSRF_COOKIE, token, domain="testserver.local", path="/login")
        response = client.post(
            "/login",
            data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf": token},
            follow_redirects=False,
        )
        assert response.status_code == 303
        (cookie,) = set_cookie_headers(response, SESSION_COOKIE)
        assert "secure" in [a.strip().lower() for a in cookie.split(";")]


# --- console gate and logout -------------------------------------------------------------


def test_console_without_session_redirects_to_login(client: TestClient) -> None:
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    client.cookies.set(SESSION_COOKIE, "forged")
    assert client.get("/console", follow_redirects=False).headers["location"] == "/login"
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/console"


def test_logout_requires_the_session_csrf_token(client: TestClient) -> None:
    assert post_login(client).status_code == 303
    console = client.get("/console")
    assert console.status_code == 200
    token = csrf_of(console.text)
    (form,) = Elements(console.text).find("form", action="/logout")
    assert form["method"] == "post"
    session = client.cookies[SESSION_COOKIE]

    for data in ({}, {"csrf": "wrong"}, {"csrf": token + "x"}):
        refused = client.post("/logout", data=data, follow_redirects=False)
        assert refused.status_code == 400
        assert client.get("/console", follow_redirects=False).status_code == 200
    response = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    (cleared,) = set_cookie_headers(response, SESSION_COOKIE)
    assert "max-age=0" in cleared.lower()
    assert client.get("/console", follow_redirects=False).headers["location"] == "/login"
    # The old token is dead server-side, not only forgotten by this browser.
    client.cookies.set(SESSION_COOKIE, session)
    assert client.get("/console", follow_redirects=False).status_code == 303


def test_logout_without_session_just_redirects(client: TestClient) -> None:
    response = client.post("/logout", data={}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_logout_is_post_only(client: TestClient) -> None:
    assert client.get("/logout", follow_redirects=False).status_code == 405


# --- PyScript pages ----------------------------------------------------------------------


def _expected_files() -> dict[str, str]:
    files = {}
    for package in ("coview", "coview_web"):
        for path in (WEB / package).glob("*.py"):
            files[f"/app/{package}/{path.name}"] = f"{package}/{path.name}"
    return files


def _page_script(html: str, kind: str) -> dict[str, Any]:
    scripts = Elements(html).find("script", type=kind)
    assert len(scripts) == 1, scripts
    config = scripts[0]["config"]
    assert config is not None
    parsed: dict[str, Any] = json.loads(config)
    parsed["_src"] = scripts[0]["src"]
    return parsed


@pytest.mark.parametrize(
    ("path", "kind", "interpreter"),
    [
        ("/widget", "mpy", "/vendor/micropython/micropython.mjs"),
        ("/popup", "mpy", "/vendor/micropython/micropython.mjs"),
        ("/console", "py", "/vendor/pyodide/pyodide.mjs"),
    ],
)
def test_pages_carry_pyscript_config(
    client: TestClient, path: str, kind: str, interpreter: str
) -> None:
    if path == "/console":
        assert post_login(client).status_code == 303
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 200
    config = _page_script(response.text, kind)
    assert config["interpreter"] == interpreter
    assert (WEB / interpreter.removeprefix("/")).is_file()
    expected = _expected_files()
    assert "/app/coview/protocol.py" in expected and "/app/coview_web/peer.py" in expected
    assert config["files"] == expected
    assert config["_src"] == f"/app/pages{path}.py"
    assert (WEB / "pages" / f"{path.removeprefix('/')}.py").is_file()
    # PyScript itself comes from /vendor too, never from a CDN.
    modules = Elements(response.text).find("script", type="module")
    assert modules and all((m["src"] or "").startswith("/vendor/pyscript/") for m in modules)
    assert "https://" not in response.text.replace("https://shop.example", "")


def test_config_files_are_served(client: TestClient) -> None:
    for url, rel in _expected_files().items():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content == (WEB / rel).read_bytes()
    assert client.get("/vendor/micropython/micropython.mjs").status_code == 200
    assert client.get("/vendor/pyodide/pyodide.mjs").status_code == 200


def test_pyscript_config_follows_files_on_disk(tmp_path: Path) -> None:
    for package in ("coview", "coview_web"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("")
        (tmp_path / package / "notes.txt").write_text("")
    (tmp_path / "coview" / "new_module.py").write_text("")
    settings = Settings.load(overrides={"web_root": str(tmp_path)}, environ={})
    config = json.loads(pages.pyscript_config(settings, "mpy", "widget"))
    assert config["files"] == {
        "/app/coview/a.py": "coview/a.py",
        "/app/coview/new_module.py": "coview/new_module.py",
        "/app/coview_web/a.py": "coview_web/a.py",
    }


# --- headers ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/console", "/widget", "/popup", "/demo"])
def test_security_headers_on_pages(client: TestClient, path: str) -> None:
    if path == "/console":
        assert post_login(client).status_code == 303
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 200
    csp = response.headers.get("content-security-policy")
    assert csp
    directives = parse_csp(csp)
    assert directives["default-src"] == "'self'"
    assert "'wasm-unsafe-eval'" in directives["script-src"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["object-src"] == "'none'"
    assert "frame-ancestors" in directives
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"]


def test_security_headers_on_refusals_and_redirects(client: TestClient) -> None:
    for response in (
        client.get("/console", follow_redirects=False),
        post_login(client, csrf=None),
        post_login(client, password="wrong password"),
    ):
        assert response.headers.get("content-security-policy")
        assert response.headers["x-content-type-options"] == "nosniff"


def test_widget_may_be_framed_only_by_configured_sites(tmp_path: Path) -> None:
    settings = Settings.load(
        overrides={
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
            "admin_password": "pw-for-tests",
            "embed_origins": "https://shop.example, https://help.example",
        }
    )
    with TestClient(create_app(settings)) as client:
        widget = client.get("/widget").headers["content-security-policy"]
        console = client.get("/login").headers["content-security-policy"]
    assert "frame-ancestors 'self' https://shop.example https://help.example" in widget
    assert "frame-ancestors 'self';" in console or console.endswith("frame-ancestors 'self'")
