# The in-browser runner (PyScript, MicroPython or Pyodide): runs the suites of plan.json with
# minitest and writes the report as JSON into <pre id="result">; progress goes to
# <pre id="progress">. The page's config put every file under ./coretest (core_runner/__init__.py).
import asyncio
import json
import os
import sys

from js import document  # PyScript's own package is not shipped (scripts/build_assets.py)

BASE = os.getcwd().rstrip("/") + "/coretest"
for sub in ("tests", "core", ""):
    sys.path.insert(0, (BASE + "/" + sub).rstrip("/"))
sys.path.append(BASE + "/shim")  # after the standard library: Pyodide keeps its typing

import minitest  # noqa: E402 - needs the path above


def show(element_id, text):
    document.getElementById(element_id).textContent = text


def source_of(name):
    with open(BASE + "/tests/" + name + ".py") as f:
        return f.read()


with open(BASE + "/plan.json") as f:
    PLAN = json.loads(f.read())


def starting(case):
    """Names the test about to run: if it kills the interpreter, the page still says which."""
    show("progress", case.id[:300])


async def main(plan):
    started = minitest.now_ms()
    report = {
        "interpreter": "pyodide" if sys.platform == "emscripten" else sys.implementation.name,
        "version": sys.version,
        "seed": plan["seed"],
        "suites": {},
    }
    for suite in plan["order"]:
        names = plan["suites"][suite]
        sources = {}
        for name in names:
            sources[name] = source_of(name)
        part = minitest.new_report()
        report["suites"][suite] = part
        breath = minitest.now_ms()
        for _ in minitest.iter_suite(
            part, names, sources, plan["seed"], None, starting, plan["deselect"]
        ):
            # Let the page breathe every 200 ms: Playwright polls it meanwhile.
            if minitest.now_ms() - breath > 200:
                await asyncio.sleep(0)
                breath = minitest.now_ms()
    report["ms"] = minitest.now_ms() - started
    show("progress", "done")
    show("result", json.dumps(report))


await main(PLAN)  # noqa: F704 - PyScript runs top-level await
