"""scripts/build_assets.py: the vendored scripts we serve name no CDN."""

import hashlib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_assets", ROOT / "scripts" / "build_assets.py")
assert _spec is not None and _spec.loader is not None
build_assets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_assets)

# The default-address code as PyScript 0.7 and Pyodide 314 minify it.
PYSCRIPT = (
    b'module:(e="1.28.0-6")=>`https://cdn.jsdelivr.net/npm/@micropython/'
    b"micropython-webassembly-pyscript@${e}/micropython.mjs`,"
    b'module:(e="314.0.2")=>`https://cdn.jsdelivr.net/pyodide/v${e}/full/pyodide.mjs`'
)
PYODIDE = b"e.cdnUrl=k(e.packageBaseUrl??`https://cdn.jsdelivr.net/pyodide/v${U}/full/`)"


def test_default_cdn_bases_become_our_vendor_paths():
    assert build_assets.localized("core.js", PYSCRIPT) == (
        b'module:(e="1.28.0-6")=>`/vendor/micropython/micropython.mjs`,'
        b'module:(e="314.0.2")=>`/vendor/pyodide/pyodide.mjs`'
    )
    assert build_assets.localized("pyodide.mjs", PYODIDE) == (
        b"e.cdnUrl=k(e.packageBaseUrl??`/vendor/pyodide/`)"
    )


def test_package_hosts_become_our_vendor_paths():
    mip = (
        b"_PACKAGE_INDEX=const('https://micropython.org/pi/v2')\n"
        b"A='https://raw.githubusercontent.com/'+A[0]+'/'+B"
    )
    assert build_assets.localized("core.js", mip) == (
        b"_PACKAGE_INDEX=const('/vendor/micropython/pi/v2')\n"
        b"A='/vendor/micropython/github/'+A[0]+'/'+B"
    )
    hint = b"See: https://packages.pyscript.net/?q=${r}`"
    assert build_assets.localized("core.js", hint) == (
        b"See: /vendor/pyodide/pyodide-lock.json#${r}`"
    )


def test_links_to_pyscripts_sites_become_words():
    text = (
        b"See: https://docs.pyscript.net/latest/faq/#sharedarraybuffer'\n"
        b'"Consider using the worker attribute: '
        b'https://pyscript.github.io/docs/2023.11.2/user-guide/workers/"'
    )
    assert build_assets.localized("core.js", text) == (
        b"See: the SharedArrayBuffer entry of the PyScript FAQ'\n"
        b'"Consider using the worker attribute: the workers page of the PyScript user guide"'
    )


@pytest.mark.parametrize(
    "left",
    [
        b"http://raw.githubusercontent.com/owner/repo/HEAD/x.py",
        b"https://micropython.org/pi/v3/index.json",
        b"https://packages.pyscript.net/",
        b"https://cdn.jsdelivr.net/npm/other@1/x.js",
        b"https://unpkg.com/pkg@2/index.js",
        b"http://cdnjs.cloudflare.com/ajax/libs/x.js",
        b"https://esm.sh/preact",
        b"https://pyscript.net/releases/2024.1.1/core.js",
        b"https://pyscript.github.io/docs/latest/",
    ],
)
def test_any_other_cdn_address_fails_the_build(left):
    with pytest.raises(SystemExit) as failed:
        build_assets.localized("chunk.js", b"import(`" + left + b"`)")
    assert "chunk.js still names a CDN" in str(failed.value)


def test_a_plain_mention_is_not_an_address():
    text = b"/* Minified by jsDelivr */ const ok = '/vendor/pyodide/';"
    assert build_assets.localized("x.js", text) == text


def test_what_the_build_ships_names_no_cdn():
    node_modules = ROOT / "node_modules"
    if not (node_modules / "@pyscript" / "core").is_dir():
        pytest.fail("node_modules is not installed: run scripts/bootstrap")
    files = build_assets.plan(node_modules, with_editor=False, compile_stdlib=False, snapshot=False)
    scripts = {rel: src for rel, src in files.items() if rel.endswith((".js", ".mjs"))}
    assert "pyodide/pyodide.mjs" in scripts and any(r.startswith("pyscript/core-") for r in scripts)
    for rel, src in scripts.items():
        data = src if isinstance(src, bytes) else src.read_bytes()
        assert build_assets._CDN.search(data) is None, rel


def test_the_shipped_core_boots_without_pyscripts_package():
    node_modules = ROOT / "node_modules"
    if not (node_modules / "@pyscript" / "core").is_dir():
        pytest.fail("node_modules is not installed: run scripts/bootstrap")
    files = build_assets.plan(node_modules, with_editor=False, compile_stdlib=False, snapshot=False)
    chunk = re.compile(r"pyscript/core-[A-Za-z0-9_]{8}\.js")
    shipped = [src for rel, src in files.items() if chunk.fullmatch(rel)]
    assert len(shipped) == 1 and isinstance(shipped[0], bytes)
    assert build_assets._PYSCRIPT_STDLIB.search(shipped[0]) is None
    assert b"import pyscript as _pyscript" in shipped[0]  # still defined, never run


def test_the_bootstrap_is_dropped_once_or_the_build_stops():
    chunk = b'Bo=(e,t)=>{const n="mpy"===t?Ao.replace(bo,""):Ao,r={};'
    assert build_assets.without_pyscript_package("c.js", chunk) == b'Bo=(e,t)=>{const n="",r={};'
    with pytest.raises(SystemExit, match="found 0 times"):
        build_assets.without_pyscript_package("c.js", b"const n=Ao")
    with pytest.raises(SystemExit, match="found 2 times"):
        build_assets.without_pyscript_package("c.js", chunk + chunk)


def test_with_a_snapshot_pyodide_pages_start_from_its_loader():
    node_modules = ROOT / "node_modules"
    if not (node_modules / "@pyscript" / "core").is_dir():
        pytest.fail("node_modules is not installed: run scripts/bootstrap")
    dist = node_modules / "@pyscript" / "core" / "dist"
    with_snapshot = json.loads(build_assets.preload_json(dist, snapshot=True))["pyodide"]
    assert with_snapshot["modules"][0] == build_assets.SNAPSHOT_ENTRY  # the page's interpreter
    assert with_snapshot["fetch"][0] == build_assets.SNAPSHOT
    plain = json.loads(build_assets.preload_json(dist))["pyodide"]
    assert plain["modules"][0] == "pyodide/pyodide.mjs"
    assert build_assets.SNAPSHOT not in plain["fetch"]
    # The loader reseeds what the snapshot froze and falls back to a plain start-up.
    loader = build_assets.SNAPSHOT_ENTRY_JS.decode()
    assert "_r.seed()" in loader and "_loadSnapshot: snapshot" in loader
    assert "if (snapshot === null) return start(options);" in loader


def test_our_modules_get_pyodide_bytecode_keyed_by_their_source(tmp_path):
    pyo = ROOT / "node_modules" / "pyodide"
    if shutil.which("node") is None or not pyo.is_dir():
        pytest.fail("node and node_modules are needed: run scripts/bootstrap")
    web, cache = tmp_path / "web", tmp_path / "cache"
    (web / "coview").mkdir(parents=True)
    (web / "coview" / "a.py").write_text("X = 1\n")
    (web / "coview" / "b.py").write_text("def f(:\n")  # a syntax error: the build says so
    assert build_assets.app_bytecode(web, pyo, cache) == {}
    (web / "coview" / "b.py").write_text("")
    out = build_assets.app_bytecode(web, pyo, cache)
    index = json.loads(out[build_assets.PYC_INDEX])
    assert set(index) == {"coview/a.py", "coview/b.py"}
    a = index["coview/a.py"]
    assert a["sha256"] == hashlib.sha256(b"X = 1\n").hexdigest()
    pyc = out[a["pyc"]]
    assert isinstance(pyc, Path) and pyc.read_bytes()[:4] == (3627).to_bytes(2, "little") + b"\r\n"
    # An edited source gets another file; the old one leaves the cache.
    (web / "coview" / "a.py").write_text("X = 2\n")
    again = build_assets.app_bytecode(web, pyo, cache)
    assert json.loads(again[build_assets.PYC_INDEX])["coview/a.py"]["pyc"] != a["pyc"]
    assert not pyc.exists()
