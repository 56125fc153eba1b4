"""coview_server.static.Assets: MIME types, precompressed variants, ETags, caching, traversal."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from coview_server import static
from coview_server.static import (
    IMMUTABLE,
    NO_CACHE,
    Assets,
    asset_version,
    compiled_mpy,
    parse_accept_encoding,
    safe_segments,
)

JS = b"export const answer = 42;\n" * 100
WASM = b"\x00asm\x01\x00\x00\x00" + bytes(range(256)) * 8


def _variant(path: Path, suffix: str, data: bytes) -> None:
    """Write a precompressed variant with the original's mtime (as build_assets does)."""
    variant = path.with_name(path.name + suffix)
    variant.write_bytes(data)
    st = path.stat()
    os.utime(variant, ns=(st.st_mtime_ns, st.st_mtime_ns))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "app.js").write_bytes(JS)
    _variant(r / "app.js", ".gz", gzip.compress(JS))
    _variant(r / "app.js", ".br", b"BROTLI-BYTES")  # content is opaque to the server
    (r / "mod.mjs").write_bytes(b"export {};\n")
    (r / "engine.wasm").write_bytes(WASM)
    _variant(r / "engine.wasm", ".gz", gzip.compress(WASM))
    (r / "main.py").write_text("print('hi')\n")
    (r / "conf.toml").write_text("x = 1\n")
    (r / "data.json").write_text("{}")
    (r / "style.css").write_text("body{}")
    (r / "page.html").write_text("<!doctype html>")
    (r / "lib.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    (r / "icon.svg").write_text("<svg/>")
    (r / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (r / "blob.bin").write_bytes(b"\x01\x02")
    (r / "sub" / "deep.txt").write_text("deep")
    (r / ".hidden").write_text("hidden")
    (tmp_path / "secret.txt").write_text("SECRET")
    (r / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (r / "inside-link.txt").symlink_to(r / "sub" / "deep.txt")
    return r


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    app = Starlette(
        routes=[
            Mount("/vendor", app=Assets(root, immutable=True)),
            Mount("/app", app=Assets(root, immutable=False)),
        ]
    )
    with TestClient(app) as c:
        yield c


def call(
    app: Assets,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    root_path: str = "",
    query: str = "",
) -> tuple[int, dict[str, str], bytes]:
    """Call the ASGI app directly: raw path, raw (undecoded) body."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "query_string": query.encode(),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert sent[-1].get("more_body", False) is False
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], out_headers, body


# -- MIME types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("engine.wasm", "application/wasm"),
        ("main.py", "text/x-python; charset=utf-8"),
        ("conf.toml", "application/toml; charset=utf-8"),
        ("data.json", "application/json"),
        ("style.css", "text/css; charset=utf-8"),
        ("page.html", "text/html; charset=utf-8"),
        ("lib.zip", "application/zip"),
        ("icon.svg", "image/svg+xml"),
        ("pic.png", "image/png"),
        ("blob.bin", "application/octet-stream"),
        ("sub/deep.txt", "text/plain; charset=utf-8"),
    ],
)
def test_media_types(client: TestClient, name: str, media_type: str) -> None:
    r = client.get(f"/app/{name}", headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.headers["content-type"] == media_type
    assert "content-encoding" not in r.headers


def test_body_and_length(client: TestClient, root: Path) -> None:
    r = client.get("/app/engine.wasm", headers={"accept-encoding": "identity"})
    assert r.content == WASM
    assert r.headers["content-length"] == str(len(WASM))


def test_symlink_inside_root_is_served(client: TestClient) -> None:
    assert client.get("/app/inside-link.txt").text == "deep"


# -- precompressed variants ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "encoding", "body"),
    [
        ("br", "br", b"BROTLI-BYTES"),
        ("gzip, deflate, br, zstd", "br", b"BROTLI-BYTES"),
        ("gzip", "gzip", gzip.compress(JS)),
        ("x-gzip", "gzip", gzip.compress(JS)),
        ("br;q=0.5, gzip;q=1.0", "gzip", gzip.compress(JS)),
        ("br;q=0, gzip", "gzip", gzip.compress(JS)),
        ("*", "br", b"BROTLI-BYTES"),
        ("*;q=0", None, JS),
        ("identity", None, JS),
        ("deflate", None, JS),
        ("gzip;q=abc", None, JS),
        ("", None, JS),
    ],
)
def test_precompressed_choice(root: Path, accept: str, encoding: str | None, body: bytes) -> None:
    status, headers, raw = call(Assets(root), "/app.js", {"accept-encoding": accept})
    assert status == 200
    assert headers.get("content-encoding") == encoding
    assert headers["content-type"] == "text/javascript; charset=utf-8"  # of the original
    assert headers["content-length"] == str(len(raw))
    assert headers["vary"] == "Accept-Encoding"
    if encoding == "gzip":
        assert gzip.decompress(raw) == JS
    else:
        assert raw == body


def test_no_header_means_identity(root: Path) -> None:
    status, headers, raw = call(Assets(root), "/app.js")
    assert (status, raw) == (200, JS)
    assert "content-encoding" not in headers
    assert headers["vary"] == "Accept-Encoding"


def test_missing_variant_falls_back(root: Path) -> None:
    # engine.wasm has a .gz but no .br
    _, headers, raw = call(Assets(root), "/engine.wasm", {"accept-encoding": "br"})
    assert "content-encoding" not in headers and raw == WASM
    _, headers, raw = call(Assets(root), "/engine.wasm", {"accept-encoding": "br, gzip"})
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/wasm"
    assert gzip.decompress(raw) == WASM


def test_stale_variant_is_ignored(root: Path) -> None:
    js = root / "app.js"
    st = js.stat()
    later = st.st_mtime_ns + 5_000_000_000
    os.utime(js, ns=(later, later))  # original rebuilt after its variants
    _, headers, raw = call(Assets(root), "/app.js", {"accept-encoding": "br, gzip"})
    assert "content-encoding" not in headers and raw == JS


def test_client_decodes_variant(client: TestClient) -> None:
    r = client.get("/app/engine.wasm", headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == WASM  # httpx decoded it


def test_variant_file_requested_directly(root: Path) -> None:
    status, headers, raw = call(Assets(root), "/app.js.gz", {"accept-encoding": "gzip"})
    assert status == 200
    assert headers["content-type"] == "application/gzip"
    assert "content-encoding" not in headers
    assert gzip.decompress(raw) == JS


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding(["gzip;q=0.8, BR", "zstd;q=2"]) == {
        "gzip": 0.8,
        "br": 1.0,
        "zstd": 0.0,
    }
    assert parse_accept_encoding([" , ;q=1"]) == {}


# -- caching: ETag, 304, Cache-Control ----------------------------------------------------------


def test_cache_control(client: TestClient) -> None:
    assert client.get("/vendor/app.js").headers["cache-control"] == (
        "public, max-age=31536000, immutable"
    )
    assert client.get("/app/app.js").headers["cache-control"] == "no-cache"


def test_etag_and_304(root: Path) -> None:
    app = Assets(root, immutable=True)
    status, headers, _ = call(app, "/app.js", {"accept-encoding": "identity"})
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"') and etag.endswith('"')
    for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, h304, body = call(
            app, "/app.js", {"accept-encoding": "identity", "if-none-match": inm}
        )
        assert (status, body) == (304, b""), inm
        assert h304["etag"] == etag
        assert h304["cache-control"] == "public, max-age=31536000, immutable"
        assert h304["vary"] == "Accept-Encoding"
        assert "content-length" not in h304
    status, _, body = call(app, "/app.js", {"accept-encoding": "identity", "if-none-match": '"x"'})
    assert (status, body) == (200, JS)


def test_etag_differs_per_representation(root: Path) -> None:
    app = Assets(root)
    etags = {
        call(app, "/app.js", {"accept-encoding": enc})[1]["etag"]
        for enc in ("identity", "gzip", "br")
    }
    assert len(etags) == 3
    # The identity ETag does not validate the brotli representation.
    plain = call(app, "/app.js", {"accept-encoding": "identity"})[1]["etag"]
    status, _, _ = call(app, "/app.js", {"accept-encoding": "br", "if-none-match": plain})
    assert status == 200


def test_etag_follows_content(root: Path) -> None:
    app = Assets(root)
    before = call(app, "/main.py")[1]["etag"]
    (root / "main.py").write_text("print('changed')\n")
    assert call(app, "/main.py")[1]["etag"] != before


def test_client_304(client: TestClient) -> None:
    etag = client.get("/app/main.py").headers["etag"]
    r = client.get("/app/main.py", headers={"if-none-match": etag})
    assert r.status_code == 304 and r.content == b""


# -- methods ------------------------------------------------------------------------------------


def test_head(client: TestClient) -> None:
    r = client.head("/app/engine.wasm", headers={"accept-encoding": "identity"})
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(WASM))
    assert r.headers["content-type"] == "application/wasm"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_405(client: TestClient, method: str) -> None:
    r = client.request(method, "/app/app.js")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


def test_websocket_scope_is_closed(root: Path) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(Assets(root)({"type": "websocket", "path": "/app.js"}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_lifespan_scope_is_refused(root: Path) -> None:
    async def noop(*_: Any) -> Any:
        return {}

    with pytest.raises(RuntimeError):
        asyncio.run(Assets(root)({"type": "lifespan"}, noop, noop))


# -- not found and traversal --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope.js", "/sub", "/sub/", "/", "", "/sub/nope"])
def test_missing_404(root: Path, path: str) -> None:
    status, headers, body = call(Assets(root), path)
    assert (status, body) == (404, b"Not Found")
    assert headers["content-type"] == "text/plain; charset=utf-8"


TRAVERSALS = [
    "/../secret.txt",
    "/sub/../../secret.txt",
    "/sub/../app.js",  # even when it would stay inside: dot segments are refused
    "/./app.js",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/%252e%252e/secret.txt",
    "/..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/sub\\..\\..\\secret.txt",
    "//etc/passwd",
    "/" + os.sep + "etc/passwd",
    "/app.js\x00.png",
    "/app.js%00",
    "/C:/Windows/win.ini",
    "/.hidden",
    "/sub/.",
    "/escape.txt",  # symlink pointing outside root
    "/app.js\n",
    "app.js",  # no leading slash
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_rejected_without_touching_outside(
    root: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_stat = os.stat

    def spy_stat(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        seen.append(os.fspath(p))
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", spy_stat)  # the os module static.py uses
    status, _, body = call(Assets(root), path)
    assert (status, body) == (404, b"Not Found")
    root_real = os.path.realpath(root)
    outside = [p for p in seen if not os.path.realpath(p).startswith(root_real + os.sep)]
    assert outside == []
    assert b"SECRET" not in body


@pytest.mark.parametrize(
    "url",
    ["/app/../secret.txt", "/app/%2e%2e/secret.txt", "/app/sub/%2e%2e/%2e%2e/secret.txt"],
)
def test_traversal_through_http_client(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 404
    assert "SECRET" not in r.text


def test_mounted_route_path(root: Path) -> None:
    app = Assets(root)
    status, _, body = call(app, "/app.js", {"accept-encoding": "identity"}, root_path="/vendor")
    assert (status, body) == (200, JS)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/a/b.js", ("a", "b.js")),
        ("/a", ("a",)),
        ("/a//b", None),
        ("/a/", None),
        ("/..", None),
        ("/a/.b", None),
        ("/a:b", None),
        ("/a%2fb", None),
        ("a", None),
    ],
)
def test_safe_segments(path: str, segments: tuple[str, ...] | None) -> None:
    assert safe_segments(path) == segments


# -- content-versioned URLs (?v=) ---------------------------------------------------------------


def test_versioned_url_is_immutable_on_a_no_cache_mount(root: Path) -> None:
    app = Assets(root, immutable=False)
    version = asset_version(root / "main.py")
    assert version is not None and len(version) == static.VERSION_LEN
    assert version == hashlib.sha256((root / "main.py").read_bytes()).hexdigest()[:16]
    status, headers, body = call(app, "/main.py", query=f"v={version}")
    assert (status, headers["cache-control"], body) == (200, IMMUTABLE.decode(), b"print('hi')\n")
    # Wrong or stale version (a page rendered before the file changed): the current content,
    # revalidated as usual, never cached for a year under a URL that names other content.
    for query in ("v=0123456789abcdef", "v=", "x=1&v=nope", "v=" + version.upper()):
        status, headers, body = call(app, "/main.py", query=query)
        assert (status, headers["cache-control"]) == (200, NO_CACHE.decode()), query
        assert body == b"print('hi')\n"
    # No version: as before.
    assert call(app, "/main.py")[1]["cache-control"] == NO_CACHE.decode()
    # Other query parameters next to the right version do not matter.
    assert call(app, "/main.py", query=f"a=b&v={version}")[1]["cache-control"] == IMMUTABLE.decode()


def test_versioned_url_of_a_precompressed_file(root: Path) -> None:
    """The version names the content, whichever coding carries it."""
    app = Assets(root, immutable=False)
    version = asset_version(root / "app.js")
    status, headers, body = call(app, "/app.js", {"accept-encoding": "gzip"}, query=f"v={version}")
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert headers["cache-control"] == IMMUTABLE.decode()
    assert gzip.decompress(body) == JS


def test_versioned_url_304(root: Path) -> None:
    app = Assets(root, immutable=False)
    version = asset_version(root / "main.py")
    etag = call(app, "/main.py")[1]["etag"]
    status, headers, body = call(app, "/main.py", {"if-none-match": etag}, query=f"v={version}")
    assert (status, body, headers["cache-control"]) == (304, b"", IMMUTABLE.decode())


def test_version_follows_content(root: Path) -> None:
    before = asset_version(root / "main.py")
    (root / "main.py").write_text("print('changed')\n")
    after = asset_version(root / "main.py")
    assert before != after
    app = Assets(root, immutable=False)
    assert call(app, "/main.py", query=f"v={before}")[1]["cache-control"] == NO_CACHE.decode()
    assert call(app, "/main.py", query=f"v={after}")[1]["cache-control"] == IMMUTABLE.decode()


def test_version_of_nothing(root: Path) -> None:
    assert asset_version(root / "missing.py") is None
    assert asset_version(root / "sub") is None


def test_immutable_mount_ignores_versions(root: Path) -> None:
    app = Assets(root, immutable=True)
    assert call(app, "/main.py", query="v=wrong")[1]["cache-control"] == IMMUTABLE.decode()


def test_versioned_url_through_http_client(client: TestClient, root: Path) -> None:
    version = asset_version(root / "main.py")
    response = client.get(f"/app/main.py?v={version}")
    assert response.headers["cache-control"] == IMMUTABLE.decode()
    assert client.get("/app/main.py?v=bad").headers["cache-control"] == "no-cache"


# -- MicroPython bytecode (.mpy) --------------------------------------------------------------

needs_mpy_cross = pytest.mark.skipif(
    static.mpy_cross() is None, reason="no mpy-cross of the vendored MicroPython's release"
)


@needs_mpy_cross
def test_mpy_is_compiled_from_the_source(root: Path) -> None:
    app = Assets(root, immutable=False)
    status, headers, body = call(app, "/main.mpy", {"accept-encoding": "gzip, br"})
    assert status == 200 and body.startswith(b"M\x06")  # .mpy format version 6
    assert headers["content-type"] == "application/octet-stream"
    assert "content-encoding" not in headers
    assert headers["content-length"] == str(len(body))
    assert body == compiled_mpy(root / "main.py")
    version = asset_version(root / "main.mpy")
    assert version == hashlib.sha256(body).hexdigest()[: static.VERSION_LEN]
    assert headers["cache-control"] == NO_CACHE.decode()
    versioned = call(app, "/main.mpy", query=f"v={version}")
    assert versioned[1]["cache-control"] == IMMUTABLE.decode() and versioned[2] == body
    status, _, empty = call(app, "/main.mpy", {"if-none-match": headers["etag"]})
    assert (status, empty) == (304, b"")
    # HEAD: headers only.
    status, head, empty = call(app, "/main.mpy", method="HEAD")
    assert (status, empty, head["content-length"]) == (200, b"", str(len(body)))


@needs_mpy_cross
def test_mpy_follows_the_source(root: Path) -> None:
    before = compiled_mpy(root / "main.py")
    (root / "main.py").write_text("print('something else entirely')\n")
    after = compiled_mpy(root / "main.py")
    assert before and after and before != after


@needs_mpy_cross
def test_mpy_of_broken_source_is_404(root: Path) -> None:
    (root / "bad.py").write_text("def (:\n")
    assert compiled_mpy(root / "bad.py") is None
    assert call(Assets(root), "/bad.mpy")[0] == 404
    assert asset_version(root / "bad.mpy") is None


def test_mpy_without_a_source_or_compiler_is_404(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert call(Assets(root), "/nothing.mpy")[0] == 404
    assert call(Assets(root), "/../secret.mpy")[0] == 404
    monkeypatch.setattr(static, "_MPY_CROSS", [None])
    assert compiled_mpy(root / "main.py") is None
    assert call(Assets(root), "/main.mpy")[0] == 404


def test_an_existing_mpy_file_is_served_as_is(root: Path) -> None:
    (root / "real.mpy").write_bytes(b"M\x06real")
    (root / "real.py").write_text("x = 1\n")
    assert call(Assets(root), "/real.mpy")[2] == b"M\x06real"


def test_mpy_cross_must_match_the_runtime_release(tmp_path: Path) -> None:
    """Bytecode of another MicroPython release does not load: no compiler rather than that."""
    if static.mpy_cross() is None:
        pytest.skip("no mpy-cross here")
    (tmp_path / "micropython.wasm").write_bytes(b"\x00asm...MicroPython v0.1.0-1 on ...")
    assert static.mpy_cross(tmp_path) is None
    (tmp_path / "other").mkdir()
    assert static.mpy_cross(tmp_path / "other") is None  # no runtime at all
