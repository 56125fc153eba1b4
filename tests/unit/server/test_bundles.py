"""coview_server.bundles: one file of bytecode per MicroPython page, and its unpacker."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from coview_server import bundles, pages
from coview_server.settings import Settings

IMMUTABLE = "public, max-age=31536000, immutable"


def test_the_unbundle_script_writes_every_file_and_imports_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inline script of a bundled page, run here on CPython (it is written to the subset
    MicroPython has; the e2e suite runs it on MicroPython)."""
    files = [("pkg/__init__.py", b""), ("pkg/sub/m.py", b"VALUE = 7\n")]
    files.append(("coview_page_p.py", b"import pkg.sub.m\nSEEN = pkg.sub.m.VALUE\n"))
    (tmp_path / "pkg").mkdir()  # a directory that exists already is fine
    index = json.dumps([[name, len(data)] for name, data in files]).encode()
    (tmp_path / "coview.bundle").write_bytes(index + b"\n" + b"".join(d for _, d in files))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code = bundles.UNBUNDLE.format(bundle="coview.bundle", module="coview_page_p")
    scope: dict[str, Any] = {}
    exec(code, scope)
    assert scope["coview_page_p"].SEEN == 7
    assert (tmp_path / "pkg" / "sub" / "m.py").read_bytes() == b"VALUE = 7\n"
    assert not (tmp_path / "coview.bundle").exists()
    assert {k for k in scope if not k.startswith("__")} == {"coview_page_p"}  # no litter
    for name in ("pkg", "pkg.sub", "pkg.sub.m", "coview_page_p"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_bundles_are_served_immutable_under_their_version(client: TestClient) -> None:
    made = pages.page_bundle(Settings.load(environ={}), "popup")
    if made is None:
        pytest.skip("no mpy-cross of the runtime's release")
    fresh = client.get(made.url("popup"))
    assert fresh.status_code == 200 and fresh.headers["cache-control"] == IMMUTABLE
    assert fresh.content == made.data
    again = client.get(made.url("popup"), headers={"If-None-Match": fresh.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/app/bundle/console.bundle").status_code == 404
    assert client.get("/app/bundle/nothing.bundle").status_code == 404
    assert client.get("/app/bundle/..%2Fsecret.bundle").status_code == 404


def test_bundles_are_served_gzipped_to_browsers_that_take_it(client: TestClient) -> None:
    made = pages.page_bundle(Settings.load(environ={}), "popup")
    if made is None:
        pytest.skip("no mpy-cross of the runtime's release")
    url = made.url("popup")
    zipped = client.get(url, headers={"Accept-Encoding": "br, gzip, deflate"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == made.data  # httpx undoes the coding
    assert int(zipped.headers["content-length"]) == len(made.encoded["gzip"]) < len(made.data)
    assert gzip.decompress(made.encoded["gzip"]) == made.data
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == made.data
    refused = client.get(url, headers={"Accept-Encoding": "gzip;q=0, br"})
    assert "content-encoding" not in refused.headers
    # One ETag per coding: a cached gzip copy is not confirmed to a client that wants none.
    assert zipped.headers["etag"] != plain.headers["etag"]
    same = client.get(
        url, headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]}
    )
    assert same.status_code == 304
    other = client.get(
        url, headers={"Accept-Encoding": "identity", "If-None-Match": zipped.headers["etag"]}
    )
    assert other.status_code == 200 and other.content == made.data


def test_a_bundle_of_the_page_alone_unpacks_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that imports none of our modules: one file, no directory to make."""
    page = b"SEEN = 1\n"
    (tmp_path / "coview.bundle").write_bytes(b'[["coview_page_q.py", 9]]\n' + page)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    scope: dict[str, Any] = {}
    exec(bundles.UNBUNDLE.format(bundle="coview.bundle", module="coview_page_q"), scope)
    assert scope["coview_page_q"].SEEN == 1
    assert {k for k in scope if not k.startswith("__")} == {"coview_page_q"}
    monkeypatch.delitem(sys.modules, "coview_page_q", raising=False)
