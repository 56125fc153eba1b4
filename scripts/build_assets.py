#!/usr/bin/env python3
"""Copy the browser runtimes Coview serves itself from node_modules into web/vendor/.

Run at set-up, after ``npm ci``::

    python scripts/build_assets.py            # build or bring up to date
    python scripts/build_assets.py --check    # exit 1 if web/vendor/ is missing or stale

Layout produced (web/vendor/ is gitignored)::

    pyscript/     @pyscript/core dist: core.js, core.css and every chunk core.js can import
                  (no .map files; no CodeMirror chunks unless --with-editor, see below)
    micropython/  micropython.mjs + micropython.wasm (plain variant only)
    pyodide/      the files Pyodide 314 fetches to boot with no packages, plus the snapshot
                  of its start-up and its loader (see below)
    pyc/          our browser modules compiled for Pyodide, and their index (see below)
    pyscript/core-csp.js   generated entry point: load it instead of core.js (see below)
    preload.json  generated: what each page should preload (see below)
    manifest.json {relative path: sha256 hex} of every served original file

pyodide/python_stdlib.zip is not npm's as is: npm's zip holds the standard library as ``.py``
sources only, so Pyodide compiled every stdlib module it imported on every page load (most of
the agent console's start-up). The build compiles each module to a sourceless ``.pyc`` with
Pyodide itself, run under node (same interpreter, so the bytecode is what it reads), and stores
the entries uncompressed (brotli of the whole file is smaller than per-entry deflate, and
zipimport reads them without inflating). Measured under node: ``loadPyodide()`` 8.9-12.2 s with
npm's zip, 1.6-3.2 s with the compiled one (loaded machine). The result is cached in
``node_modules/.cache/coview-stdlib/`` by the hashes of the zip, the interpreter and the recipe;
``--uncompiled-stdlib`` (or no node) ships npm's zip. Tracebacks through stdlib frames show file
and line but no source text.

Default CDN addresses: PyScript's core chunk and pyodide.mjs fall back to jsDelivr URLs
(``https://cdn.jsdelivr.net/…``) when a page names no interpreter or package base. Coview pages
always name ours, and the CSP would block the CDN anyway, but nothing we serve should point
elsewhere: the build rewrites those defaults to ``/vendor/micropython/`` and ``/vendor/pyodide/``
and refuses to build if any script still carries a CDN address (``LOCAL_BASES``). The same goes
for the package hosts in the core chunk: the ``mip`` installer PyScript writes into MicroPython
(its index ``micropython.org/pi/v2`` and ``raw.githubusercontent.com`` for ``github:`` names)
and the "might not support" hint on Pyodide pages (``packages.pyscript.net``). Coview serves no
package index, so a page asking for packages gets our 404 instead of a stranger's files; the
hint points at the lock file listing the packages this Pyodide has. Links to PyScript's sites
in messages Coview never shows (``DOC_LINKS``) become words.

Every file of at least 1 KiB also gets ``<name>.gz`` (gzip level 9) and, when the ``brotli``
package is importable, ``<name>.br`` (quality 11), each only when it is smaller than the original.
Variants carry the original's mtime so the server can tell a stale variant from a good one.

CodeMirror: core.js imports the py-editor plugin on every page (unless the page config lists
``"!py-editor"`` in ``plugins``), but the plugin only imports the CodeMirror chunks once a
``<script type="py-editor">`` / ``mpy-editor`` exists. Coview pages have no editor, so those
chunks (and any chunk only they import) are left out; ``--with-editor`` keeps them.

core-csp.js: PyScript 0.7 always registers one worker-side hook, and polyscript compiles worker
hooks with ``Function()`` as soon as an interpreter boots, even on pages without workers. Under a
CSP without ``'unsafe-eval'`` that throws and the page never starts. Coview runs Python on the
main thread only, so core-csp.js (which re-exports core.js) drops that hook before the
interpreter boots; PyScript workers would need ``'unsafe-eval'`` and plain core.js.

PyScript's Python package: before a page's first script, PyScript 0.7 writes its own package
(``pyscript/``, about 30 KB of source) into the interpreter's file system and imports all of it
(``pyscript.web`` alone builds a class per HTML element). Coview's pages never import it: they
reach JavaScript through ``coview_web.ffi``, which uses the interpreters' own ``js``, ``jsffi``
(MicroPython) and ``pyodide.ffi``. The build drops that bootstrap from the core chunk, on both
interpreters, and refuses to build if it is not found exactly once. Measured with
``bench/run.py`` (same session, before/after): MicroPython from ready to our socket 220-250 ms ->
90-150 ms; Pyodide from ready to our socket 650 -> 430 ms. ``import pyscript`` on our pages
raises ``ImportError``.

Pyodide snapshot (``pyodide/snapshot.bin`` + ``pyodide/coview-pyodide.mjs``): the build starts
Pyodide under node from the very files we serve (the compiled stdlib zip included) and saves
its memory (``makeMemorySnapshot``, 30 MB, 3.8 MB as brotli). Pyodide pages name
``coview-pyodide.mjs`` as their interpreter: it restores that memory instead of starting
Python (``_loadSnapshot``), then reseeds ``random`` (the snapshot froze its state, so every
page would draw the same numbers) and resets what names the build machine. The string hash
seed stays the one of the build (a page's dicts are not fed by strangers). Pyodide marks the
API experimental: without the file (no node at build) or if its fetch fails, the loader starts
Pyodide the usual way.

Our own modules as Pyodide bytecode (``pyc/``, ``app_bytecode``): the server's CPython cannot
write Python 3.14 bytecode, so the build compiles web/coview, web/coview_web and web/pages
under node too, content-addressed, with an index the server checks each source against (an
edited file is served as ``.py`` until the next build). After a restore, wasm code has not
been warmed by Python's start-up and our imports compiled 2.5x slower (node: 80 -> 200-240 ms);
with the bytecode the console runs its first line at once.

preload.json: the files a page fetches one after the other while PyScript boots, so that
the page can ask for them all at once in its <head> (``<link rel="modulepreload">`` for
modules, ``<link rel="preload" as="fetch" crossorigin>`` for what is fetched; see
coview_server.pages)::

    {"pyscript": {"modules": [core.js, the chunks it imports statically, the "error"
                              plugin chunk (imported on every page)], "fetch": []},
     "micropython": {"modules": ["micropython/micropython.mjs"],
                     "fetch": ["micropython/micropython.wasm"]},
     "pyodide": {"modules": [pyodide.mjs, pyodide.asm.mjs],
                 "fetch": [pyodide.asm.wasm, python_stdlib.zip, pyodide-lock.json]}}

Paths are relative to web/vendor. Chunk names carry content hashes, hence a generated file.

Idempotent: a file whose source size and mtime match the last build is not copied, hashed or
compressed again, so a second run takes well under a second.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / "node_modules"
OUT = REPO / "web" / "vendor"

MIN_COMPRESS_SIZE = 1024
GZIP_LEVEL = 9
BROTLI_QUALITY = 11
# Pyodide's 30 MB snapshot: quality 11 takes a minute of set-up for 14% less than quality 9.
BROTLI_BIG = 16 << 20
BROTLI_BIG_QUALITY = 9
STATE_NAME = ".build-state.json"  # dotfile: never served (Assets refuses dot segments)
MANIFEST_NAME = "manifest.json"

MICROPYTHON_FILES = ("micropython.mjs", "micropython.wasm")
# What Pyodide 314 requests while booting with no packages (recorded with Playwright):
# pyodide.mjs -> pyodide.asm.mjs, pyodide.asm.wasm, python_stdlib.zip, pyodide-lock.json.
PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
PRELOAD_NAME = "preload.json"
# How each runtime file is requested while booting (recorded with Playwright): import() of a
# module, or fetch() (WebAssembly.instantiateStreaming, the stdlib zip, the lock file).
MICROPYTHON_PRELOAD = {"modules": ["micropython.mjs"], "fetch": ["micropython.wasm"]}
PYODIDE_PRELOAD = {
    "modules": ["pyodide.mjs", "pyodide.asm.mjs"],
    "fetch": ["pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"],
}
STDLIB = "pyodide/python_stdlib.zip"
STDLIB_CACHE = ".cache/coview-stdlib"  # under node_modules: `npm ci` clears it
# Run inside Pyodide (node): every .py of the stdlib zip becomes a sourceless .pyc (unchecked
# hash: there is no source to check against); other entries are copied. Entries are stored
# uncompressed: brotli over the whole file then compresses better than per-entry deflate, and
# zipimport reads them without inflating. Fixed timestamps: same input, same bytes.
_COMPILE_PY = """
import importlib.util, sys, zipfile
from importlib._bootstrap_external import _code_to_hash_pyc
src_path, out_path = sys.argv[1:3]
with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(out_path, "w", zipfile.ZIP_STORED) as out:
    for info in src.infolist():
        data = src.read(info)
        name = info.filename
        if name.endswith(".py"):
            code = compile(data, name, "exec", dont_inherit=True)
            data = bytes(_code_to_hash_pyc(code, importlib.util.source_hash(data), False))
            name = name[:-3] + ".pyc"
        entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = info.external_attr
        out.writestr(entry, data)
"""
_COMPILE_JS = """\
import fs from "node:fs";
const [indexURL, src, dest] = process.argv.slice(-3);
const { loadPyodide } = await import(indexURL + "pyodide.mjs");
const py = await loadPyodide({ indexURL });
py.FS.writeFile("/tmp/in.zip", fs.readFileSync(src));
py.runPython("import sys; sys.argv = ['', '/tmp/in.zip', '/tmp/out.zip']");
py.runPython(@PY@);
fs.writeFileSync(dest, py.FS.readFile("/tmp/out.zip"));
"""
APP_DIRS = ("coview", "coview_web", "pages")
PYC_CACHE = ".cache/coview-pyc"
PYC_INDEX = "pyc/index.json"
# Run under node (stdin; argv: Pyodide's folder, a JSON file of [source, name, output] jobs).
_PYC_JS = """\
import fs from "node:fs";
const [indexURL, jobsFile] = process.argv.slice(-2);
const { loadPyodide } = await import(indexURL + "pyodide.mjs");
const py = await loadPyodide({ indexURL });
const jobs = JSON.parse(fs.readFileSync(jobsFile, "utf8"));
const compile = py.runPython(@PY@);
for (const [src, name, dest] of jobs) {
  fs.writeFileSync(dest, compile(new Uint8Array(fs.readFileSync(src)), name).toJs());
}
"""
# Sourceless, unchecked-hash .pyc (there is no source beside it to check against).
_PYC_PY = """
import importlib.util
from importlib._bootstrap_external import _code_to_hash_pyc
def _compile(data, name):
    data = bytes(data.to_py())
    code = compile(data, name, "exec", dont_inherit=True)
    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(data), False))
_compile
"""
SNAPSHOT = "pyodide/snapshot.bin"
SNAPSHOT_ENTRY = "pyodide/coview-pyodide.mjs"
# Run under node (stdin; argv: Pyodide's folder, the stdlib zip pages get, the output file).
_SNAPSHOT_JS = """\
import fs from "node:fs";
const [indexURL, stdLibURL, dest] = process.argv.slice(-3);
const { loadPyodide } = await import(indexURL + "pyodide.mjs");
const py = await loadPyodide({ indexURL, stdLibURL, _makeSnapshot: true });
fs.writeFileSync(dest, py.makeMemorySnapshot());
"""
# Python run in every page right after a restore: what the snapshot froze that must differ
# per page (the random generator's state) or that names the build machine (node's script).
_AFTER_RESTORE_PY = (
    "import os as _o, random as _r, sys as _s\n"
    "_r.seed()\n"
    "while _s.path.count('') > 1: _s.path.remove('')\n"
    "_o.environ['_'] = './this.program'\n"
    "_s.executable = '/home/pyodide/this.program'\n"
    "del _o, _r, _s\n"
)
SNAPSHOT_ENTRY_JS = """\
// Generated by scripts/build_assets.py: the "interpreter" module of Coview's Pyodide pages.
// Pyodide restored from a memory snapshot of its own start-up, which the build made under
// node from the very files we serve: about 0.5 s less per page load than starting it.
// Without the snapshot (a failed fetch), Pyodide starts the usual way.
import { loadPyodide as start, version } from "./pyodide.mjs";
export { version };
const AFTER_RESTORE = @AFTER@;
export async function loadPyodide(options = {}) {
  let snapshot = null;
  try {
    const answer = await fetch(new URL("./snapshot.bin", import.meta.url));
    if (answer.ok) snapshot = new Uint8Array(await answer.arrayBuffer());
  } catch (error) {
    console.warn("Pyodide snapshot unavailable, starting it the usual way:", error);
  }
  if (snapshot === null) return start(options);
  const pyodide = await start({ ...options, _loadSnapshot: snapshot });
  pyodide.runPython(AFTER_RESTORE);
  return pyodide;
}
""".replace("@AFTER@", json.dumps(_AFTER_RESTORE_PY)).encode()
#: Default CDN bases in the vendored scripts -> where Coview serves the same files.
LOCAL_BASES = (
    (
        re.compile(
            rb"https://cdn\.jsdelivr\.net/npm/@micropython/micropython-webassembly-pyscript"
            rb"@\$\{[\w$]+\}/"
        ),
        b"/vendor/micropython/",
    ),
    (re.compile(rb"https://cdn\.jsdelivr\.net/pyodide/v\$\{[\w$]+\}/full/"), b"/vendor/pyodide/"),
    (re.compile(rb"https://micropython\.org/pi/v2"), b"/vendor/micropython/pi/v2"),
    (re.compile(rb"https://raw\.githubusercontent\.com/"), b"/vendor/micropython/github/"),
    (re.compile(rb"https://packages\.pyscript\.net/\?q="), b"/vendor/pyodide/pyodide-lock.json#"),
)
#: Links to PyScript's own sites in messages we never show (workers, ``input()`` on the main
#: thread): words instead, so that no shipped file names a PyScript host.
DOC_LINKS = (
    (
        re.compile(rb"https://docs\.pyscript\.net/[\w./#-]*sharedarraybuffer"),
        b"the SharedArrayBuffer entry of the PyScript FAQ",
    ),
    (
        re.compile(rb"https://pyscript\.github\.io/[\w./#-]*workers/?"),
        b"the workers page of the PyScript user guide",
    ),
)
#: In PyScript's core chunk, the Python run before a page's first script on the main thread:
#: ``"mpy"===t?Ao.replace(bo,""):Ao``, PyScript's own package (minus a part only workers need
#: on MicroPython). See the module doc.
_PYSCRIPT_STDLIB = re.compile(rb'"mpy"===[\w$]+\?([\w$]+)\.replace\([\w$]+,""\):\1\b')
#: Any CDN address left in a shipped script fails the build.
_CDN = re.compile(
    rb"https?://(?:[\w.-]+\.)?(?:jsdelivr\.net|unpkg\.com|cdnjs\.\w+|esm\.sh"
    rb"|raw\.githubusercontent\.com|micropython\.org/pi|pyscript\.net|github\.io)\b"
)
EDITOR_PREFIX = "codemirror"
CSP_ENTRY = "pyscript/core-csp.js"
CSP_ENTRY_JS = b"""\
// Generated by scripts/build_assets.py. Load this instead of core.js:
//   <script type="module" src="/vendor/pyscript/core-csp.js"></script>
// PyScript always registers a worker-side hook (pyscript.fs in workers) and polyscript compiles
// worker hooks with Function() whenever an interpreter boots, which a CSP without
// 'unsafe-eval' refuses. Coview runs Python on the main thread only: drop the hook first.
import { hooks } from "./core.js";
hooks.worker.onBeforeRunAsync.clear();
export * from "./core.js";
"""
_LOCAL_IMPORT = re.compile(r"""["'`]\./([A-Za-z0-9_.\-]+\.js)["'`]""")
# Static imports only (``import{a}from"./x.js"``, ``import"./x.js"``), not ``import("./x.js")``.
_STATIC_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*["']\./([A-Za-z0-9_.\-]+\.js)["']""")
# PyScript's plugin table: ``error:()=>import("./error-HASH.js")``.
_ERROR_PLUGIN = re.compile(r"""\berror:\(\)=>import\(["']\./(error-[A-Za-z0-9_\-]+\.js)["']\)""")


def _load_brotli() -> ModuleType | None:
    try:
        import brotli  # type: ignore[import-untyped]
    except ImportError:
        return None
    module: ModuleType = brotli
    return module


def pyscript_files(dist: Path, with_editor: bool) -> list[str]:
    """Names of @pyscript/core dist files to ship: all but maps and (optionally) the editor."""
    names = sorted(p.name for p in dist.iterdir() if p.is_file() and not p.name.endswith(".map"))
    if with_editor:
        return names
    # Import graph over local chunks: who references whom ("./chunk-HASH.js").
    refs: dict[str, set[str]] = {}
    for name in names:
        if name.endswith(".js"):
            text = (dist / name).read_text(encoding="utf-8")
            refs[name] = {m for m in _LOCAL_IMPORT.findall(text) if m != name}
    excluded = {n for n in names if n.startswith(EDITOR_PREFIX)}
    # Drop chunks only excluded chunks reference (e.g. the CodeMirror index chunk).
    changed = True
    while changed:
        changed = False
        for name in names:
            if name in excluded or not name.endswith(".js") or name == "core.js":
                continue
            users = {n for n, r in refs.items() if name in r}
            if users and users <= excluded:
                excluded.add(name)
                changed = True
    return [n for n in names if n not in excluded]


def pyscript_preload(dist: Path) -> list[str]:
    """core.js, every chunk it imports statically (transitively), and the "error" plugin chunk,
    which core imports on every page whatever the config says."""
    order: list[str] = []
    todo = ["core.js"]
    while todo:
        name = todo.pop(0)
        if name in order or not (dist / name).is_file():
            continue
        order.append(name)
        todo.extend(_STATIC_IMPORT.findall((dist / name).read_text(encoding="utf-8")))
    for name in list(order):
        found = _ERROR_PLUGIN.search((dist / name).read_text(encoding="utf-8"))
        if found and found.group(1) not in order and (dist / found.group(1)).is_file():
            order.append(found.group(1))
    return order


def preload_json(dist: Path, snapshot: bool = False) -> bytes:
    pyodide = {k: [f"pyodide/{n}" for n in v] for k, v in PYODIDE_PRELOAD.items()}
    if snapshot:
        pyodide["modules"].insert(0, SNAPSHOT_ENTRY)
        pyodide["fetch"].insert(0, SNAPSHOT)
    table = {
        "pyscript": {"modules": [f"pyscript/{n}" for n in pyscript_preload(dist)], "fetch": []},
        "micropython": {k: [f"micropython/{n}" for n in v] for k, v in MICROPYTHON_PRELOAD.items()},
        "pyodide": pyodide,
    }
    return (json.dumps(table, indent=1, sort_keys=True) + "\n").encode()


def plan(
    node_modules: Path,
    with_editor: bool,
    compile_stdlib: bool = True,
    snapshot: bool = True,
    web: Path | None = None,
) -> dict[str, Path | bytes]:
    """Map each destination path (relative to web/vendor, POSIX) to its source file (or to the
    bytes of a generated file)."""
    cache = node_modules / STDLIB_CACHE
    dist = node_modules / "@pyscript" / "core" / "dist"
    mpy = node_modules / "@micropython" / "micropython-webassembly-pyscript"
    pyo = node_modules / "pyodide"
    for folder in (dist, mpy, pyo):
        if not folder.is_dir():
            raise SystemExit(f"build_assets: {folder} is missing: run `npm ci` first")
    out: dict[str, Path | bytes] = {}
    for name in pyscript_files(dist, with_editor):
        out[f"pyscript/{name}"] = dist / name
    for name in MICROPYTHON_FILES:
        out[f"micropython/{name}"] = mpy / name
    for name in PYODIDE_FILES:
        out[f"pyodide/{name}"] = pyo / name
    if compile_stdlib:
        compiled = compiled_stdlib(pyo, cache)
        if compiled is not None:
            out[STDLIB] = compiled
    if snapshot:
        stdlib = out[STDLIB]
        assert isinstance(stdlib, Path)
        made = memory_snapshot(pyo, stdlib, cache)
        if made is not None:
            out[SNAPSHOT] = made
            out[SNAPSHOT_ENTRY] = SNAPSHOT_ENTRY_JS
    if web is not None:
        out.update(app_bytecode(web, pyo, node_modules / PYC_CACHE))
    for rel, src in out.items():
        if isinstance(src, Path) and not src.is_file():
            raise SystemExit(f"build_assets: {src} (for {rel}) is missing: run `npm ci` first")
    for rel, src in list(out.items()):
        if isinstance(src, Path) and rel.endswith((".js", ".mjs")):
            out[rel] = localized(rel, src.read_bytes())
    chunks = [rel for rel, data in out.items() if rel.startswith("pyscript/") and _bootstraps(data)]
    if len(chunks) != 1:
        raise SystemExit(f"build_assets: expected one chunk bootstrapping PyScript, got {chunks}")
    out[chunks[0]] = without_pyscript_package(chunks[0], out[chunks[0]])  # type: ignore[arg-type]
    # core-csp.js relies on core.js exporting the hook registry: refuse to build if it moved.
    if not re.search(r"\bas hooks\b", (dist / "core.js").read_text(encoding="utf-8")):
        raise SystemExit("build_assets: @pyscript/core dist/core.js no longer exports `hooks`")
    out[CSP_ENTRY] = CSP_ENTRY_JS
    preload = preload_json(dist, SNAPSHOT in out)
    out[PRELOAD_NAME] = preload
    for group in json.loads(preload).values():
        for rel in group["modules"] + group["fetch"]:
            if rel not in out:
                raise SystemExit(f"build_assets: preload.json names {rel}, which is not shipped")
    return out


def localized(rel: str, data: bytes) -> bytes:
    """``data`` with its default CDN bases pointing at our own /vendor/ (see the module doc)."""
    for pattern, local in (*LOCAL_BASES, *DOC_LINKS):
        data = pattern.sub(local, data)
    left = _CDN.search(data)
    if left is not None:
        raise SystemExit(f"build_assets: {rel} still names a CDN: {left.group().decode()}")
    return data


def _bootstraps(data: Path | bytes) -> bool:
    return isinstance(data, bytes) and _PYSCRIPT_STDLIB.search(data) is not None


def without_pyscript_package(rel: str, data: bytes) -> bytes:
    """PyScript's core chunk, booting both interpreters without PyScript's Python package (the
    module doc says why). Refuses a chunk where the bootstrap is not found exactly once."""
    lean, count = _PYSCRIPT_STDLIB.subn(b'""', data)
    if count != 1:
        raise SystemExit(f"build_assets: {rel}: PyScript's bootstrap found {count} times")
    return lean


def compiled_stdlib(pyo: Path, cache: Path) -> Path | None:
    """Pyodide's python_stdlib.zip with every module compiled to bytecode (see module docstring).

    Compiled by Pyodide itself under node, so the bytecode is exactly what its interpreter
    reads; cached under node_modules/ by the hashes of the zip, the interpreter and this
    recipe. ``None`` (ship the zip as npm has it) when node is missing or the compile fails.
    """
    zip_path = pyo / "python_stdlib.zip"
    return _made_by_node(
        cache / "python_stdlib.zip",
        [_sha256(zip_path), _sha256(pyo / "pyodide.asm.wasm"), _COMPILE_PY],
        _COMPILE_JS.replace("@PY@", json.dumps(_COMPILE_PY)),
        [str(pyo.resolve()) + os.sep, str(zip_path)],
        "shipping Pyodide's stdlib uncompiled",
    )


def memory_snapshot(pyo: Path, stdlib: Path, cache: Path) -> Path | None:
    """A memory snapshot of Pyodide right after its start-up, made under node from the files we
    ship (``stdlib`` is the zip pages get: the snapshot holds zipimport's index of it).

    Cached under node_modules/ by the hashes of those files and this recipe. ``None`` (pages
    start Pyodide the usual way) when node is missing or Pyodide refuses.
    """
    parts = [_sha256(stdlib), _SNAPSHOT_JS]
    parts += [_sha256(pyo / n) for n in ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm")]
    return _made_by_node(
        cache / "snapshot.bin",
        parts,
        _SNAPSHOT_JS,
        [str(pyo.resolve()) + os.sep, str(stdlib)],
        "no Pyodide snapshot (the usual start-up)",
    )


def _made_by_node(
    name: Path, key_parts: list[str], script: str, args: list[str], fallback: str
) -> Path | None:
    """``<stem>-<key><suffix>`` beside ``name``: the output file a node job writes (its last
    argument), made once per key; older keys' files are removed. ``None`` if the job failed."""
    key = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:24]
    cached = name.with_name(f"{name.stem}-{key}{name.suffix}")
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.tmp")
    if not _under_node(script, [*args, str(tmp)], [tmp], fallback):
        return None
    for old in cached.parent.glob(f"{name.stem}-*{name.suffix}"):
        old.unlink()
    os.replace(tmp, cached)
    return cached


def app_bytecode(web: Path, pyo: Path, cache: Path) -> dict[str, Path | bytes]:
    """Pyodide bytecode of our own browser modules (web/coview, web/coview_web, web/pages):
    ``pyc/<key>.pyc`` files plus ``pyc/index.json``,
    ``{"coview/protocol.py": {"sha256": <of the source>, "pyc": "pyc/<key>.pyc"}, ...}``.

    The server's CPython cannot write Pyodide's bytecode (another Python version), so Pyodide
    compiles them under node, like the stdlib. Content-addressed (the key hashes the source and
    the interpreter): the server serves a module's bytecode only for the source it was made
    from, and ``.py`` for a file edited since the last build. Compiled ones are cached under
    node_modules/. Empty when node is missing or the compile fails (pages get ``.py``).
    """
    interpreter = _sha256(pyo / "pyodide.asm.wasm")  # its Python version: the bytecode's
    sources: dict[str, tuple[Path, str]] = {}  # key -> (source, path in the page's file system)
    index: dict[str, dict[str, str]] = {}
    for package in APP_DIRS:
        for src in sorted((web / package).glob("*.py")):
            rel, source_sha = f"{package}/{src.name}", _sha256(src)
            key = hashlib.sha256(f"{interpreter}:{rel}:{source_sha}:{_PYC_PY}".encode())
            name = key.hexdigest()[:32]
            sources[name] = (src, f"/home/pyodide/{rel}")
            index[rel] = {"sha256": source_sha, "pyc": f"pyc/{name}.pyc"}
    missing = {k: v for k, v in sources.items() if not (cache / f"{k}.pyc").is_file()}
    if missing and not _compile_app(pyo, cache, missing):
        return {}
    for old in cache.glob("*.pyc"):
        if old.stem not in sources:
            old.unlink()
    out: dict[str, Path | bytes] = {f"pyc/{k}.pyc": cache / f"{k}.pyc" for k in sorted(sources)}
    out[PYC_INDEX] = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
    return out


def _compile_app(pyo: Path, cache: Path, todo: dict[str, tuple[Path, str]]) -> bool:
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [[str(src), name, str(cache / f"{key}.pyc")] for key, (src, name) in todo.items()]
    jobs_file = cache / ".jobs.json"
    jobs_file.write_text(json.dumps(jobs), encoding="utf-8")
    script = _PYC_JS.replace("@PY@", json.dumps(_PYC_PY))
    made = [Path(job[2]) for job in jobs]
    args = [str(pyo.resolve()) + os.sep, str(jobs_file)]
    try:
        return _under_node(script, args, made, "pages get .py")
    finally:
        jobs_file.unlink(missing_ok=True)


def _under_node(script: str, args: list[str], outputs: list[Path], fallback: str) -> bool:
    """Run a Pyodide job (ES module text on stdin) under node; False, with the reason and what
    the build does instead on stderr, when node is missing or the job made no ``outputs``."""
    node = shutil.which("node")
    if node is None:
        print(f"build_assets: node not found: {fallback}", file=sys.stderr)
        return False
    done = subprocess.run(
        [node, "--input-type=module", "-", *args],
        input=script,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode == 0 and all(p.is_file() for p in outputs):
        return True
    print(f"build_assets: Pyodide under node failed: {fallback}:", file=sys.stderr)
    print((done.stderr or done.stdout)[-2000:], file=sys.stderr)
    for p in outputs:
        p.unlink(missing_ok=True)
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_sha(src: Path | bytes) -> str:
    return hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else _sha256(src)


def _write_atomic(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    if mtime_ns is not None:
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, path)


def _size(src: Path | bytes) -> int:
    return len(src) if isinstance(src, bytes) else src.stat().st_size


def _variant_ok(path: Path, mtime_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns == mtime_ns
    except FileNotFoundError:
        return False


class Builder:
    def __init__(self, out: Path, brotli: ModuleType | None, verbose: bool) -> None:
        self.out = out
        self.brotli = brotli
        self.verbose = verbose
        self.encodings = ("br", "gz") if brotli is not None else ("gz",)
        self.state: dict[str, dict[str, object]] = {}
        state_path = out / STATE_NAME
        if state_path.is_file():
            try:
                loaded = json.loads(state_path.read_text(encoding="utf-8"))
                if loaded.get("encodings") == list(self.encodings):
                    self.state = loaded.get("files", {})
            except (ValueError, AttributeError):
                self.state = {}

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def up_to_date(self, rel: str, src: Path | bytes) -> bool:
        entry = self.state.get(rel)
        if not entry:
            return False
        dest = self.out / rel
        try:
            dst = dest.stat()
        except FileNotFoundError:
            return False
        if isinstance(src, bytes):
            fresh = (
                entry.get("sha256") == hashlib.sha256(src).hexdigest()
                and entry.get("size") == len(src) == dst.st_size
                and entry.get("mtime_ns") == dst.st_mtime_ns
            )
        else:
            st = src.stat()
            fresh = (
                entry.get("size") == st.st_size == dst.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns == dst.st_mtime_ns
            )
        variants = entry.get("variants")
        if not fresh or not isinstance(variants, list):
            return False
        return all(
            _variant_ok(dest.with_name(f"{dest.name}.{v}"), dst.st_mtime_ns) for v in variants
        )

    def build_one(self, rel: str, src: Path | bytes) -> dict[str, object]:
        dest = self.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            data = src
            if not dest.is_file() or dest.read_bytes() != data:
                _write_atomic(dest, data)
            mtime_ns = dest.stat().st_mtime_ns
        else:
            data = src.read_bytes()
            mtime_ns = src.stat().st_mtime_ns
            _write_atomic(dest, data, mtime_ns)
        variants: list[str] = []
        for enc in self.encodings:
            vpath = dest.with_name(f"{dest.name}.{enc}")
            packed: bytes | None = None
            if len(data) >= MIN_COMPRESS_SIZE:
                if enc == "gz":
                    packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
                elif self.brotli is not None:
                    quality = BROTLI_QUALITY if len(data) < BROTLI_BIG else BROTLI_BIG_QUALITY
                    packed = self.brotli.compress(data, quality=quality)
            if packed is not None and len(packed) < len(data):
                _write_atomic(vpath, packed, mtime_ns)
                variants.append(enc)
            elif vpath.exists():
                vpath.unlink()
        self.log(f"built {rel} ({len(data)} B; {', '.join(variants) or 'no variants'})")
        return {
            "size": len(data),
            "mtime_ns": mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest(),
            "variants": variants,
        }

    def run(self, files: dict[str, Path | bytes]) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        todo = [rel for rel, src in files.items() if not self.up_to_date(rel, src)]
        if todo:
            workers = max(1, min(len(todo), os.cpu_count() or 1))
            # zlib and brotli release the GIL while compressing: threads use every core.
            biggest_first = sorted(todo, key=lambda r: -_size(files[r]))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = pool.map(lambda r: (r, self.build_one(r, files[r])), biggest_first)
                for rel, entry in results:
                    self.state[rel] = entry
        self.state = {rel: self.state[rel] for rel in sorted(files)}
        removed = self.prune(self._expected_paths())
        manifest = {rel: str(entry["sha256"]) for rel, entry in self.state.items()}
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        manifest_path = self.out / MANIFEST_NAME
        if not manifest_path.is_file() or manifest_path.read_bytes() != manifest_bytes:
            _write_atomic(manifest_path, manifest_bytes)
        state_bytes = json.dumps(
            {"encodings": list(self.encodings), "files": self.state}, indent=1, sort_keys=True
        ).encode()
        state_path = self.out / STATE_NAME
        if not state_path.is_file() or state_path.read_bytes() != state_bytes:
            _write_atomic(state_path, state_bytes)
        return len(todo) + removed

    def _expected_paths(self) -> set[Path]:
        keep = {self.out / MANIFEST_NAME, self.out / STATE_NAME}
        for rel, entry in self.state.items():
            dest = self.out / rel
            keep.add(dest)
            variants = entry.get("variants")
            assert isinstance(variants, list)
            keep.update(dest.with_name(f"{dest.name}.{v}") for v in variants)
        return keep

    def prune(self, keep: set[Path]) -> int:
        """Remove anything in the output folder a build would not produce."""
        removed = 0
        for path in sorted(self.out.rglob("*"), key=lambda p: -len(p.parts)):
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
                continue
            if path not in keep:
                self.log(f"removed stale {path.relative_to(self.out)}")
                path.unlink()
                removed += 1
        return removed


def check(out: Path, files: dict[str, Path | bytes]) -> list[str]:
    """Problems that make web/vendor/ differ from what a build would produce (empty: fine)."""
    problems: list[str] = []
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.is_file():
        return [f"{manifest_path} is missing"]
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if set(manifest) != set(files):
        problems.append("manifest lists other files than a build would copy")
    for rel, src in files.items():
        dest = out / rel
        if not dest.is_file():
            problems.append(f"{rel} is missing")
        elif manifest.get(rel) != _source_sha(src) or _sha256(dest) != manifest.get(rel):
            origin = "the generated text" if isinstance(src, bytes) else str(src)
            problems.append(f"{rel} differs from {origin}")
    return problems


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--node-modules", type=Path, default=NODE_MODULES)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--web", type=Path, default=REPO / "web", help="our browser modules (for their bytecode)"
    )
    parser.add_argument(
        "--with-editor", action="store_true", help="also ship the CodeMirror chunks (py-editor)"
    )
    parser.add_argument(
        "--uncompiled-stdlib",
        action="store_true",
        help="ship Pyodide's stdlib zip as npm has it (.py sources, slower start)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild everything")
    parser.add_argument("--check", action="store_true", help="verify only; exit 1 when stale")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)

    files = plan(args.node_modules, args.with_editor, not args.uncompiled_stdlib, web=args.web)
    if args.check:
        problems = check(args.out, files)
        for p in problems:
            print(f"build_assets: {p}", file=sys.stderr)
        return 1 if problems else 0
    if args.force and args.out.exists():
        shutil.rmtree(args.out)
    brotli = _load_brotli()
    if brotli is None and not args.quiet:
        print("build_assets: brotli not importable: writing .gz variants only", file=sys.stderr)
    started = time.monotonic()
    changed = Builder(args.out, brotli, verbose=not args.quiet).run(files)
    if not args.quiet:
        took = time.monotonic() - started
        print(f"build_assets: {len(files)} files, {changed} changed, {took:.2f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
