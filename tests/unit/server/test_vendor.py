"""coview_server.vendor: every build of web/vendor under its own URL prefix."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from coview_server.vendor import VendorAssets, build_id, vendor_url

IMMUTABLE = "public, max-age=31536000, immutable"


def _vendor(root: Path, manifest: str) -> TestClient:
    (root / "pyodide").mkdir(parents=True, exist_ok=True)
    (root / "pyodide" / "pyodide.mjs").write_text("export const version = 1;\n")
    (root / "manifest.json").write_text(manifest)
    return TestClient(Starlette(routes=[Mount("/vendor", app=VendorAssets(root))]))


def test_pages_name_the_current_build_and_get_it_immutable(tmp_path: Path) -> None:
    client = _vendor(tmp_path, '{"pyodide/pyodide.mjs": "aa"}')
    build = build_id(tmp_path)
    assert build is not None and len(build) == 13
    url = vendor_url(tmp_path, "pyodide/pyodide.mjs")
    assert url == f"/vendor/{build}/pyodide/pyodide.mjs"
    answer = client.get(url)
    assert answer.status_code == 200 and answer.headers["cache-control"] == IMMUTABLE
    assert answer.text == "export const version = 1;\n"
    # Relative imports stay inside the build's prefix (what the vendored modules rely on).
    assert client.get(f"/vendor/{build}/pyodide/missing.mjs").status_code == 404


def test_a_rebuild_moves_every_url_and_old_ones_are_never_kept(tmp_path: Path) -> None:
    client = _vendor(tmp_path, '{"pyodide/pyodide.mjs": "aa"}')
    old = vendor_url(tmp_path, "pyodide/pyodide.mjs")
    (tmp_path / "pyodide" / "pyodide.mjs").write_text("export const version = 2;\n")
    (tmp_path / "manifest.json").write_text('{"pyodide/pyodide.mjs": "bb"}')
    new = vendor_url(tmp_path, "pyodide/pyodide.mjs")
    assert new != old
    assert client.get(new).headers["cache-control"] == IMMUTABLE
    stale = client.get(old)  # a page rendered before the upgrade: current file, revalidated
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"
    assert stale.text == "export const version = 2;\n"


def test_plain_and_odd_paths_are_revalidated_or_refused(tmp_path: Path) -> None:
    client = _vendor(tmp_path, "{}")
    plain = client.get("/vendor/pyodide/pyodide.mjs")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
    build = build_id(tmp_path)
    for path in (
        f"/vendor/{build}",
        f"/vendor/{build}/",
        f"/vendor/{build}/%2e%2e/manifest.json",
        "/vendor/bXXXXXXXXXXXX/pyodide/pyodide.mjs",
    ):
        assert client.get(path).status_code == 404, path


def test_without_a_manifest_urls_are_plain(tmp_path: Path) -> None:
    assert build_id(tmp_path) is None
    assert vendor_url(tmp_path, "pyodide/pyodide.mjs") == "/vendor/pyodide/pyodide.mjs"
