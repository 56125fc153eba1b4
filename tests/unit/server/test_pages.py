"""HTML pages: login and logout with CSRF, the console gate, PyScript configuration, headers."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from starlette.testclient import TestClient

from coview_server import pages, static
from coview_server.app import create_app
from coview_server.security import parse_csp
from coview_server.settings import Settings
from coview_server.signaling import SESSION_COOKIE
from coview_server.vendor import vendor_url

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

    def handle_data(self, data: str) -> None:  # a <script>'s text, under the key "text"
        if self.tags and self.tags[-1][0] == "script":
            attrs = self.tags[-1][1]
            attrs["text"] = (attrs.get("text") or "") + data

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


PAGE_MODULES = {
    # What each page's script imports, directly or not (packages' __init__ included).
    "popup": {
        "coview/protocol.py",
        "coview/negotiation.py",
        "coview_web/ffi.py",
        "coview_web/peer.py",
        "coview_web/channel.py",
        "coview_web/media.py",
    },
    "widget": {"coview/protocol.py", "coview_web/channel.py", "coview_web/ffi.py"},
    "console": {
        "coview/protocol.py",
        "coview/quality.py",
        "coview_web/stats.py",
        "coview_web/peer.py",
    },
}
IMMUTABLE = "public, max-age=31536000, immutable"


def _expected_files(page: str, interpreter: str) -> dict[str, str]:
    """The files config a page must carry: its modules, ``?v=<version>``, .mpy on MicroPython
    when the server has a matching mpy-cross, the build's .pyc on Pyodide (the page too)."""
    settings = Settings.load(environ={})
    made = pages.page_bundle(settings, page) if interpreter == "mpy" else None
    if made is not None:
        return {made.url(page): "coview.bundle"}
    files = {}
    for rel in pages.page_modules(WEB, page):
        pyc = pages.bytecode_url(settings, rel) if interpreter == "py" else None
        if pyc is not None:
            files[pyc] = rel.removesuffix(".py") + ".pyc"
            continue
        if interpreter == "mpy" and static.compiled_mpy(WEB / rel) is not None:
            rel = rel.removesuffix(".py") + ".mpy"
        files[f"/app/{rel}?v={static.asset_version(WEB / rel)}"] = rel
    page_pyc = pages.bytecode_url(settings, f"pages/{page}.py") if interpreter == "py" else None
    if page_pyc is not None:
        files[page_pyc] = f"coview_page_{page}.pyc"
    return files


#: A CPython 3.14 .pyc (Pyodide 314's interpreter) starts with this magic number.
PYODIDE_PYC_MAGIC = (3627).to_bytes(2, "little") + b"\r\n"
VENDOR = WEB / "vendor"
#: The console's interpreter module: the build's snapshot loader when it made one.
PYODIDE_ENTRY = vendor_url(
    VENDOR,
    "pyodide/coview-pyodide.mjs"
    if (VENDOR / "pyodide" / "coview-pyodide.mjs").is_file()
    else "pyodide/pyodide.mjs",
)


def _vendor_file(url: str) -> Path:
    """The file under web/vendor a ``/vendor/<build>/...`` URL of the current build names."""
    prefix = vendor_url(VENDOR, "")
    assert url.startswith(prefix), url
    return VENDOR / url.removeprefix(prefix)


def _page_script(html: str, kind: str) -> dict[str, Any]:
    scripts = Elements(html).find("script", type=kind)
    assert len(scripts) == 1, scripts
    config = scripts[0]["config"]
    assert config is not None
    parsed: dict[str, Any] = json.loads(config)
    parsed["_src"] = scripts[0].get("src")
    parsed["_code"] = (scripts[0].get("text") or "").strip()
    return parsed


@pytest.mark.parametrize(
    ("path", "kind", "interpreter"),
    [
        ("/widget", "mpy", vendor_url(VENDOR, "micropython/micropython.mjs")),
        ("/popup", "mpy", vendor_url(VENDOR, "micropython/micropython.mjs")),
        ("/console", "py", PYODIDE_ENTRY),
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
    assert _vendor_file(interpreter).is_file()
    page = path.removeprefix("/")
    expected = _expected_files(page, kind)
    shipped = list(expected.values())
    if shipped == ["coview.bundle"]:
        shipped = _bundle_names(client.get(next(iter(expected))).content)
    names = {re.sub(r"\.(mpy|pyc|py)$", ".py", rel) for rel in shipped}
    assert PAGE_MODULES[page] <= names
    assert {"coview/__init__.py", "coview_web/__init__.py"} <= names
    assert config["files"] == expected
    script = WEB / "pages" / f"{page}.py"
    assert script.is_file()
    if f"coview_page_{page}.pyc" in expected.values():  # the page's bytecode, imported inline
        assert config["_src"] is None and config["_code"] == f"import coview_page_{page}"
    elif shipped != list(expected.values()):  # a bundle: unpacked, then the page imported
        assert config["_src"] is None and config["_code"].endswith(f"import coview_page_{page}")
        assert shipped[-1] == f"coview_page_{page}.mpy"
    else:
        assert config["_src"] == f"/app/pages/{page}.py?v={static.asset_version(script)}"
        assert not config["_code"]
    # PyScript itself comes from /vendor too, never from a CDN.
    modules = Elements(response.text).find("script", type="module")
    ours = vendor_url(VENDOR, "pyscript/")
    assert modules and all((m["src"] or "").startswith(ours) for m in modules)
    assert "https://" not in response.text.replace("https://shop.example", "")
    # Everything the page script fetches is preloaded under the very same URL.
    preloaded = {link["href"] for link in Elements(response.text).find("link", rel="preload")}
    if kind == "mpy":
        assert set(expected) | ({config["_src"]} if config["_src"] else set()) <= preloaded


def _bundle_names(data: bytes) -> list[str]:
    """The file names a page bundle carries (coview_server.bundles), checking its sizes."""
    head, _, rest = data.partition(b"\n")
    index = json.loads(head)
    assert sum(size for _, size in index) == len(rest)
    return [name for name, _ in index]


def _shipped(client: TestClient, path: str, kind: str) -> list[str]:
    files = _page_script(client.get(path).text, kind)["files"]
    if list(files.values()) == ["coview.bundle"]:
        return _bundle_names(client.get(next(iter(files))).content)
    return list(files.values())


def test_pages_get_only_the_modules_they_import(client: TestClient) -> None:
    popup = _shipped(client, "/popup", "mpy")
    assert any(rel.startswith("coview/protocol.") for rel in popup)
    assert not any(rel.startswith(("coview/netcheck.", "coview/useragent.")) for rel in popup)
    assert not any(rel.startswith("coview_web/stats.") for rel in popup)


def test_config_files_are_served_immutable(client: TestClient) -> None:
    assert post_login(client).status_code == 303
    for path, kind in (("/popup", "mpy"), ("/widget", "mpy"), ("/console", "py")):
        config = _page_script(client.get(path).text, kind)
        src = [(config["_src"], "")] if config["_src"] else []
        for url, rel in [*config["files"].items(), *src]:
            response = client.get(url)
            assert response.status_code == 200, url
            assert response.headers["cache-control"] == IMMUTABLE, url
            if url.startswith("/app/bundle/"):
                made = pages.page_bundle(Settings.load(environ={}), path.removeprefix("/"))
                assert made is not None and response.content == made.data
                assert response.content.count(b"M\x06") >= 2  # MicroPython .mpy v6 inside
                plain = client.get(url.partition("?")[0])
                assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
                assert plain.content == made.data
                continue
            if url.startswith(vendor_url(VENDOR, "pyc/")):  # content-addressed: no ?v=
                assert response.content == _vendor_file(url).read_bytes()
                assert response.content[:4] == PYODIDE_PYC_MAGIC, url
                continue
            source = WEB / url.removeprefix("/app/").partition("?")[0]
            if url.partition("?")[0].endswith(".mpy"):
                assert response.content == static.compiled_mpy(source.with_suffix(".py"))
                assert response.content.startswith(b"M\x06")  # MicroPython .mpy v6
            else:
                assert response.content == source.read_bytes()
            assert not rel or url.partition("?")[0].endswith(rel)
            # The plain URL (no version) still works, revalidated on every use.
            plain = client.get(url.partition("?")[0])
            assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
    assert client.get("/vendor/micropython/micropython.mjs").status_code == 200
    assert client.get("/vendor/pyodide/pyodide.mjs").status_code == 200


def test_stylesheets_carry_versions(client: TestClient) -> None:
    for path in ("/popup", "/widget", "/login", "/demo"):
        links = Elements(client.get(path).text).find("link", rel="stylesheet")
        ours = [link["href"] or "" for link in links if (link["href"] or "").startswith("/static/")]
        assert ours, path
        for href in ours:
            plain, _, query = href.partition("?")
            assert query == f"v={static.asset_version(WEB / plain.removeprefix('/'))}", href
            assert client.get(href).headers["cache-control"] == IMMUTABLE


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_page_modules_follow_imports(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "pages/p.py": "import js\nfrom coview import a as A, b\nfrom coview_web.w import X\n",
            "coview/__init__.py": "",
            "coview/a.py": "import json\n\ndef f():\n    from coview.deep import g\n",
            "coview/b.py": "import coview.c\n",
            "coview/c.py": "",
            "coview/deep.py": "",
            "coview/unused.py": "",
            "coview/broken.py": "def (:\n",
            "coview_web/__init__.py": "",
            "coview_web/w.py": "from coview import protocol  # not on disk: ignored\n",
            "coview_web/other.py": "",
        },
    )
    assert pages.page_modules(tmp_path, "p") == [
        "coview/__init__.py",
        "coview/a.py",
        "coview/b.py",
        "coview/c.py",
        "coview/deep.py",
        "coview_web/__init__.py",
        "coview_web/w.py",
    ]
    assert pages.page_modules(tmp_path, "missing") == []


def test_page_modules_walk_is_remembered_until_the_tree_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(
        tmp_path,
        {
            "pages/p.py": "from coview import a\n",
            "coview/__init__.py": "",
            "coview/a.py": "from coview import later\n",  # not on disk yet
            "coview/b.py": "",
        },
    )
    walks: list[Path] = []
    walk = pages._walk_imports
    monkeypatch.setattr(pages, "_walk_imports", lambda web, e: walks.append(e) or walk(web, e))
    first = pages.page_modules(tmp_path, "p")
    assert first == ["coview/__init__.py", "coview/a.py"]
    assert pages.page_modules(tmp_path, "p") == first
    assert len(walks) == 1  # the second render asked nothing of the disk but stats

    # A module appears for an import that named nothing: its directory changed.
    (tmp_path / "coview/later.py").write_text("")
    assert pages.page_modules(tmp_path, "p") == [*first, "coview/later.py"]
    assert len(walks) == 2

    # An edited file's new import is followed, though no directory changed.
    mtime = (tmp_path / "coview").stat().st_mtime_ns
    (tmp_path / "coview/a.py").write_text("from coview import later, b\n")
    assert (tmp_path / "coview").stat().st_mtime_ns == mtime
    assert pages.page_modules(tmp_path, "p") == [*first, "coview/b.py", "coview/later.py"]
    assert len(walks) == 3


def test_pyscript_config_follows_files_on_disk(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "pages/widget.py": "from coview import a\n",
            "coview/__init__.py": "",
            "coview/a.py": "",
            "coview/notes.txt": "",
        },
    )
    settings = Settings.load(overrides={"web_root": str(tmp_path)}, environ={})
    config = json.loads(pages.pyscript_config(settings, "py", "widget"))
    assert config["files"] == {
        f"/app/coview/__init__.py?v={static.asset_version(tmp_path / 'coview/__init__.py')}": (
            "coview/__init__.py"
        ),
        f"/app/coview/a.py?v={static.asset_version(tmp_path / 'coview/a.py')}": "coview/a.py",
    }
    before_a = next(url for url in config["files"] if url.startswith("/app/coview/a.py?"))
    (tmp_path / "coview" / "new_module.py").write_text("x = 1\n")
    (tmp_path / "coview" / "a.py").write_text("from coview import new_module\n")
    config = json.loads(pages.pyscript_config(settings, "py", "widget"))
    assert sorted(config["files"].values()) == [
        "coview/__init__.py",
        "coview/a.py",
        "coview/new_module.py",
    ]
    # A changed file gets a new URL: a browser's long-cached copy is never used for it.
    assert before_a not in config["files"]
    assert f"/app/coview/a.py?v={static.asset_version(tmp_path / 'coview/a.py')}" in config["files"]


def test_micropython_pages_fall_back_to_source_without_mpy_cross(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(static, "_MPY_CROSS", [None])
    _tree(tmp_path, {"pages/popup.py": "import coview\n", "coview/__init__.py": ""})
    settings = Settings.load(overrides={"web_root": str(tmp_path)}, environ={})
    config = json.loads(pages.pyscript_config(settings, "mpy", "popup"))
    assert list(config["files"].values()) == ["coview/__init__.py"]


@pytest.mark.skipif(static.mpy_cross() is None, reason="no mpy-cross of the runtime's release")
def test_micropython_pages_get_one_bundle_of_bytecode(tmp_path: Path) -> None:
    _tree(tmp_path, {"pages/popup.py": "import coview\n", "coview/__init__.py": "X = 1\n"})
    settings = Settings.load(overrides={"web_root": str(tmp_path)}, environ={})
    config = json.loads(pages.pyscript_config(settings, "mpy", "popup"))
    init = static.compiled_mpy(tmp_path / "coview/__init__.py")
    page = static.compiled_mpy(tmp_path / "pages/popup.py")
    assert init is not None and page is not None
    index = [["coview/__init__.mpy", len(init)], ["coview_page_popup.mpy", len(page)]]
    data = json.dumps(index, separators=(",", ":")).encode() + b"\n" + init + page
    version = hashlib.sha256(data).hexdigest()[: static.VERSION_LEN]
    assert config["files"] == {f"/app/bundle/popup.bundle?v={version}": "coview.bundle"}
    made = pages.page_bundle(settings, "popup")
    assert made is not None and made.data == data
    # Any file edited: a new bundle, under a new URL.
    (tmp_path / "coview" / "__init__.py").write_text("X = 2\n")
    again = pages.page_bundle(settings, "popup")
    assert again is not None and again.version != made.version
    # A module that does not compile: no bundle, the files one by one (as source).
    (tmp_path / "coview" / "__init__.py").write_text("def (:\n")
    assert pages.page_bundle(settings, "popup") is None
    assert pages.page_script_code(settings, "mpy", "popup") is None
    config = json.loads(pages.pyscript_config(settings, "mpy", "popup"))
    assert list(config["files"].values()) == ["coview/__init__.py"]
    # Only MicroPython pages have bundles.
    assert pages.page_bundle(settings, "console") is None


def _bytecode_build(root: Path, rels: list[str]) -> None:
    """What scripts/build_assets.py leaves for ``rels``: vendor/pyc/<key>.pyc and the index."""
    index = {}
    for n, rel in enumerate(rels):
        (root / "vendor" / "pyc").mkdir(parents=True, exist_ok=True)
        (root / "vendor" / "pyc" / f"k{n}.pyc").write_bytes(PYODIDE_PYC_MAGIC + b"...")
        sha = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        index[rel] = {"sha256": sha, "pyc": f"pyc/k{n}.pyc"}
    (root / "vendor" / "pyc" / "index.json").write_text(json.dumps(index))


def test_pyodide_pages_get_the_builds_bytecode_of_unchanged_sources(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {"pages/console.py": "from coview import a\n", "coview/__init__.py": "", "coview/a.py": ""},
    )
    _bytecode_build(tmp_path, ["pages/console.py", "coview/__init__.py", "coview/a.py"])
    settings = Settings.load(overrides={"web_root": str(tmp_path)}, environ={})
    config = json.loads(pages.pyscript_config(settings, "py", "console"))
    assert config["files"] == {
        "/vendor/pyc/k1.pyc": "coview/__init__.pyc",
        "/vendor/pyc/k2.pyc": "coview/a.pyc",
        "/vendor/pyc/k0.pyc": "coview_page_console.pyc",
    }
    assert pages.page_script_code(settings, "py", "console") == "import coview_page_console"
    # MicroPython pages never get it (another interpreter's bytecode).
    assert pages.page_script_code(settings, "mpy", "console") is None
    assert "/vendor/pyc/k2.pyc" not in pages.pyscript_config(settings, "mpy", "console")

    # A file edited since the build is sent as source; so is the page, then run from its src.
    (tmp_path / "coview" / "a.py").write_text("X = 2\n")
    (tmp_path / "pages" / "console.py").write_text("from coview import a  # edited\n")
    config = json.loads(pages.pyscript_config(settings, "py", "console"))
    version = static.asset_version(tmp_path / "coview" / "a.py")
    assert config["files"] == {
        "/vendor/pyc/k1.pyc": "coview/__init__.pyc",
        f"/app/coview/a.py?v={version}": "coview/a.py",
    }
    assert pages.page_script_code(settings, "py", "console") is None
    # A bytecode file gone from the build, or no index at all: source.
    (tmp_path / "vendor" / "pyc" / "k1.pyc").unlink()
    assert pages.bytecode_url(settings, "coview/__init__.py") is None
    (tmp_path / "vendor" / "pyc" / "index.json").write_text("not json")
    assert pages.bytecode_url(settings, "coview/__init__.py") is None
    (tmp_path / "vendor" / "pyc" / "index.json").unlink()
    assert pages.bytecode_url(settings, "coview/__init__.py") is None


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
