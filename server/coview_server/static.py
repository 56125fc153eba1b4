"""Static files: the browser runtimes under web/vendor/ and our own Python/HTML for the browser.

``Assets(root, immutable)`` is a small ASGI app, used like Starlette's ``StaticFiles``::

    Mount("/vendor", app=Assets(VENDOR_DIR, immutable=True))
    Mount("/coview_web", app=Assets(WEB_DIR / "coview_web", immutable=False))

What it adds over ``StaticFiles``:

* precompressed variants: for ``x.wasm`` it sends ``x.wasm.br`` or ``x.wasm.gz`` (written by
  ``scripts/build_assets.py``) when ``Accept-Encoding`` allows, with ``Content-Encoding`` and
  ``Vary: Accept-Encoding``; nothing is compressed at request time;
* strong content-hash ETags (one per representation) and ``If-None-Match`` → 304;
* ``Cache-Control: public, max-age=31536000, immutable`` or ``no-cache``;
* explicit MIME types (``.mjs`` → text/javascript, ``.wasm`` → application/wasm, ...), not the
  host's mimetypes database;
* a strict path check: any ``.``-prefixed, empty, ``%``, backslash, NUL or control-character
  segment is a 404 before the file system is touched, and the resolved real path must stay under
  ``root`` (symlinks pointing outside are 404 too).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from starlette.types import Receive, Scope, Send

__all__ = ["MEDIA_TYPES", "Assets"]

IMMUTABLE = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"
CHUNK_SIZE = 256 * 1024

MEDIA_TYPES: dict[str, str] = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".py": "text/x-python; charset=utf-8",
    ".toml": "application/toml; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".br": "application/octet-stream",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
DEFAULT_MEDIA_TYPE = "application/octet-stream"

# Content codings we have precompressed files for: (Accept-Encoding token, file suffix).
# Order breaks ties between equal q-values: brotli is smaller.
ENCODINGS: tuple[tuple[str, str], ...] = (("br", ".br"), ("gzip", ".gz"))

_FORBIDDEN_CHARS = frozenset("\\%:\x00") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


@dataclass(frozen=True, slots=True)
class _Chosen:
    path: str
    size: int
    mtime_ns: int
    ino: int
    encoding: str | None


def route_path(scope: Scope) -> str:
    """The request path below the mount point (Starlette's ``Mount`` sets ``root_path``)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        rest = path[len(root_path) :]
        if rest == "" or rest.startswith("/"):
            return rest
    return path


def safe_segments(path: str) -> tuple[str, ...] | None:
    """Split a URL path into file-name segments, or ``None`` if it is not a plain relative path.

    Rejected: no leading ``/``; empty segments (``//``, trailing ``/``: an empty first segment
    would make the join absolute); segments starting with ``.`` (``.``, ``..``, dotfiles);
    backslashes, ``%`` (double-encoded traversal such as ``%252e%252e``), ``:`` (drive letters,
    alternate streams), NUL and other control characters.
    """
    if not path.startswith("/"):
        return None
    segments = tuple(path[1:].split("/"))
    for seg in segments:
        if not seg or seg.startswith(".") or not _FORBIDDEN_CHARS.isdisjoint(seg):
            return None
    return segments


def parse_accept_encoding(values: list[str]) -> dict[str, float]:
    """``{coding: q}`` from Accept-Encoding header values (lower-cased; bad q-values → 0)."""
    out: dict[str, float] = {}
    for value in values:
        for item in value.split(","):
            parts = [p.strip() for p in item.split(";")]
            coding = parts[0].lower()
            if not coding:
                continue
            q = 1.0
            for param in parts[1:]:
                name, _, raw = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        q = float(raw.strip())
                    except ValueError:
                        q = 0.0
                    if not 0.0 <= q <= 1.0:
                        q = 0.0
            out[coding] = q
    return out


def _quality(accepted: dict[str, float], coding: str) -> float:
    if coding in accepted:
        return accepted[coding]
    if coding == "gzip" and "x-gzip" in accepted:
        return accepted["x-gzip"]
    return accepted.get("*", 0.0)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``; ``*`` matches anything."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:32]


class Assets:
    """ASGI app serving the files under ``root`` (GET and HEAD only; see module docstring)."""

    def __init__(self, root: Path | str, immutable: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.immutable = immutable
        self.cache_control = IMMUTABLE if immutable else NO_CACHE
        self._etags: dict[tuple[str, int, int, int], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            raise RuntimeError(f"Assets cannot serve ASGI scope type {scope['type']!r}")
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            await self._plain(send, 405, b"Method Not Allowed", [(b"allow", b"GET, HEAD")])
            return
        headers = _request_headers(scope)
        rel = route_path(scope)
        chosen = await anyio.to_thread.run_sync(self._choose, rel, headers.get("accept-encoding"))
        if chosen is None:
            await self._plain(send, 404, b"Not Found")
            return
        etag = await self._etag(chosen)
        name = rel.rsplit("/", 1)[-1]
        media_type = MEDIA_TYPES.get(os.path.splitext(name)[1].lower(), DEFAULT_MEDIA_TYPE)
        common = [
            (b"etag", etag.encode()),
            (b"cache-control", self.cache_control),
            (b"vary", b"Accept-Encoding"),
        ]
        inm = headers.get("if-none-match")
        if inm is not None and _etag_matches(", ".join(inm), etag):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return
        response_headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(chosen.size).encode()),
            *common,
        ]
        if chosen.encoding is not None:
            response_headers.append((b"content-encoding", chosen.encoding.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        await self._stream(chosen, send)

    def _resolve(self, rel: str) -> str | None:
        """Real path of a regular file under root for the URL path ``rel``, else ``None``."""
        segments = safe_segments(rel)
        if segments is None:
            return None
        real = os.path.realpath(os.path.join(self.root, *segments))
        if not real.startswith(self.root + os.sep):
            return None
        return real

    def _choose(self, rel: str, accept_encoding: list[str] | None) -> _Chosen | None:
        real = self._resolve(rel)
        if real is None:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if accept_encoding:
            accepted = parse_accept_encoding(accept_encoding)
            ranked = sorted(
                (coding for coding in ENCODINGS if _quality(accepted, coding[0]) > 0),
                key=lambda c: -_quality(accepted, c[0]),
            )
            for coding, suffix in ranked:
                variant = real + suffix
                try:
                    vst = os.stat(variant)
                except OSError:
                    continue
                # A variant older than its original is stale: never serve it.
                if stat.S_ISREG(vst.st_mode) and vst.st_mtime_ns >= st.st_mtime_ns:
                    return _Chosen(variant, vst.st_size, vst.st_mtime_ns, vst.st_ino, coding)
        return _Chosen(real, st.st_size, st.st_mtime_ns, st.st_ino, None)

    async def _etag(self, chosen: _Chosen) -> str:
        key = (chosen.path, chosen.size, chosen.mtime_ns, chosen.ino)
        digest = self._etags.get(key)
        if digest is None:
            digest = await anyio.to_thread.run_sync(_hash_file, chosen.path)
            if len(self._etags) > 4096:
                self._etags.clear()
            self._etags[key] = digest
        return f'"{digest}"'

    async def _stream(self, chosen: _Chosen, send: Send) -> None:
        remaining = chosen.size
        async with await anyio.open_file(chosen.path, "rb") as f:
            while remaining > 0:
                chunk = await f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": remaining > 0}
                )
        if remaining > 0:  # the file shrank under us: end the body (length will not match)
            await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _plain(
        send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", NO_CACHE),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _request_headers(scope: Scope) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        out.setdefault(name, []).append(raw_value.decode("latin-1"))
    return out
