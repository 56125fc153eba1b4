"""scripts/build_assets.py: the vendored scripts we serve name no CDN."""

import importlib.util
import re
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


@pytest.mark.parametrize(
    "left",
    [
        b"https://cdn.jsdelivr.net/npm/other@1/x.js",
        b"https://unpkg.com/pkg@2/index.js",
        b"http://cdnjs.cloudflare.com/ajax/libs/x.js",
        b"https://esm.sh/preact",
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
    files = build_assets.plan(node_modules, with_editor=False, compile_stdlib=False)
    scripts = {rel: src for rel, src in files.items() if rel.endswith((".js", ".mjs"))}
    assert "pyodide/pyodide.mjs" in scripts and any(r.startswith("pyscript/core-") for r in scripts)
    for rel, src in scripts.items():
        data = src if isinstance(src, bytes) else src.read_bytes()
        assert build_assets._CDN.search(data) is None, rel


def test_the_shipped_core_boots_without_pyscripts_package():
    node_modules = ROOT / "node_modules"
    if not (node_modules / "@pyscript" / "core").is_dir():
        pytest.fail("node_modules is not installed: run scripts/bootstrap")
    files = build_assets.plan(node_modules, with_editor=False, compile_stdlib=False)
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
