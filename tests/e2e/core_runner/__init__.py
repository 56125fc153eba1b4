"""Runs the shared core's unit tests inside the browser, on MicroPython and on Pyodide.

``make_app()`` is a test-only Starlette app behind the product's ``SecurityHeaders`` (same
strict CSP): ``/runner/{micropython,pyodide}.html`` is a PyScript page whose config copies
the core (``web/coview``), the portable unit tests (``tests/unit/core``), the runner
(``browser/``: ``minitest`` plus ``pytest``/``hypothesis`` shims) and a plan into the
interpreter's file system; ``browser/main.py`` then runs every suite of the plan and writes a
JSON report into ``<pre id="result">``.  The runtimes come from ``/vendor`` (our own
``web/vendor`` copy, served by ``coview_server.static.Assets``), never from a CDN.

Suites: ``core`` (the unit tests) and ``canary`` (``browser/canary.py``, tests that fail on
purpose, proving the runner can report a failure).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route

from coview_server.security import SecurityHeaders
from coview_server.static import Assets

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
BROWSER = HERE / "browser"
UNIT = ROOT / "tests" / "unit" / "core"
CORE = ROOT / "web" / "coview"
VENDOR = ROOT / "web" / "vendor"

#: Unit test modules of tests/unit/core that do not test the core's behaviour but CPython-side
#: facts about it, and so stay on CPython (every other test_*.py there runs in the browser).
CPYTHON_ONLY = {
    "test_micropython": "runs MicroPython itself, under Node, as a subprocess",
    "test_purity": "parses the core's source with CPython's ast module (an import rule)",
    "test_protocol_doc": "reads docs/protocol.md from the repository with CPython's re",
}

#: The product's entry points (on Pyodide, the build's snapshot loader when it made one: the
#: core is tested on the interpreter the console runs).
INTERPRETERS = {
    "micropython": ("mpy", "/vendor/micropython/micropython.mjs"),
    "pyodide": (
        "py",
        "/vendor/pyodide/coview-pyodide.mjs"
        if (VENDOR / "pyodide" / "coview-pyodide.mjs").is_file()
        else "/vendor/pyodide/pyodide.mjs",
    ),
}
#: Every PyScript plugin but "error" off (their chunks would load for nothing).
PLUGINS = ["!deprecations-manager", "!donkey", "!py-editor", "!py-game", "!py-terminal"]
SHIM_FILES = [
    "pytest.py",
    "typing.py",
    "__future__.py",
    "hypothesis/__init__.py",
    "hypothesis/strategies.py",
]


def core_test_modules() -> list[str]:
    """Module names of the core's unit tests that run in the browser, sorted."""
    names = sorted(p.stem for p in UNIT.glob("test_*.py"))
    return [n for n in names if n not in CPYTHON_ONLY]


def core_test_paths() -> list[Path]:
    return [UNIT / (name + ".py") for name in core_test_modules()]


#: Core tests that cannot run at all on an interpreter because they kill it (the page's
#: interpreter dies with them): {interpreter: {test id: why}}.  The runner reports them as
#: ``deselected``; each is a bug in the core on that interpreter.
CRASHES: dict[str, dict[str, str]] = {
    "micropython": {},
    "pyodide": {},
}


def plan(interpreter: str, seed: int) -> dict[str, object]:
    return {
        "seed": seed,
        "order": ["core", "canary"],
        "suites": {"core": core_test_modules(), "canary": ["canary"]},
        "deselect": CRASHES[interpreter],
    }


def page_config(interpreter: str, seed: int) -> dict[str, object]:
    _, runtime = INTERPRETERS[interpreter]
    files = {
        f"/core/{p.name}": f"./coretest/core/coview/{p.name}" for p in sorted(CORE.glob("*.py"))
    }
    for name in core_test_modules():
        files[f"/unit/{name}.py"] = f"./coretest/tests/{name}.py"
    files["/runner/files/canary.py"] = "./coretest/tests/canary.py"
    files["/runner/files/minitest.py"] = "./coretest/minitest.py"
    for rel in SHIM_FILES:
        files[f"/runner/files/shim/{rel}"] = f"./coretest/shim/{rel}"
    files[f"/runner/plan-{interpreter}-{seed}.json"] = "./coretest/plan.json"
    return {"interpreter": runtime, "files": files, "plugins": PLUGINS}


def page(interpreter: str, seed: int) -> str:
    kind, _ = INTERPRETERS[interpreter]
    other = "py" if kind == "mpy" else "mpy"
    config = html.escape(json.dumps(page_config(interpreter, seed)), quote=True)
    plugins = json.dumps({"plugins": PLUGINS})
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Coview core tests ({interpreter})</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/vendor/pyscript/core.css">
<script type="module" src="/vendor/pyscript/core-csp.js"></script>
<!-- Plugins are shared by both types: the other type must disable them too. -->
<{other}-config type="json">{plugins}</{other}-config>
</head>
<body>
<pre id="progress"></pre>
<pre id="result"></pre>
<script type="{kind}" src="/runner/files/main.py" config="{config}"></script>
</body>
</html>
"""


async def _page(request: Request) -> HTMLResponse:
    interpreter = request.path_params["interpreter"]
    if interpreter not in INTERPRETERS:
        return HTMLResponse("unknown interpreter", status_code=404)
    seed = int(request.query_params.get("seed", "0"))
    return HTMLResponse(page(interpreter, seed), headers={"cache-control": "no-cache"})


async def _plan(request: Request) -> JSONResponse:
    interpreter = request.path_params["interpreter"]
    if interpreter not in INTERPRETERS:
        return JSONResponse({"error": "unknown interpreter"}, status_code=404)
    return JSONResponse(plan(interpreter, int(request.path_params["seed"])))


def make_app() -> SecurityHeaders:
    app = Starlette(
        routes=[
            Route("/runner/{interpreter}.html", _page),
            Route("/runner/plan-{interpreter}-{seed:int}.json", _plan),
            Mount("/runner/files", app=Assets(BROWSER, immutable=False)),
            Mount("/unit", app=Assets(UNIT, immutable=False)),
            Mount("/core", app=Assets(CORE, immutable=False)),
            Mount("/vendor", app=Assets(VENDOR, immutable=True)),
        ]
    )
    return SecurityHeaders(app)
