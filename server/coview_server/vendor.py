"""The browser runtimes under ``/vendor/<build>/``: one URL space per build of web/vendor.

Vendored files keep their npm names (``pyodide.mjs``, ``micropython.wasm``, ``core.js``) and
import each other by relative URLs, so a version cannot ride in a query string. Served under
fixed names and ``immutable``, an upgrade would leave browsers with last year's
``pyodide.mjs`` next to this year's bytecode, or a Pyodide snapshot of another interpreter
(a broken console until the cache forgets). Pages therefore name ``/vendor/<build>/...``,
where ``<build>`` hashes web/vendor/manifest.json (every file's sha256, written by
scripts/build_assets.py): a rebuild that changes any file changes every URL.

* ``/vendor/<current build>/x``: ``x``, ``immutable``;
* ``/vendor/<another build>/x`` (a page rendered before an upgrade): the current ``x``,
  ``no-cache`` (never kept);
* ``/vendor/x`` (no build: our test pages, a missing manifest): ``x``, ``no-cache``.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from starlette.types import Receive, Scope, Send

from .static import Assets, route_path, stat_key

__all__ = ["VendorAssets", "build_id", "vendor_url"]

MANIFEST = "manifest.json"
_BUILD = re.compile(r"b[0-9a-f]{12}")


def build_id(vendor_root: Path | str) -> str | None:
    """``b<12 hex>`` naming the current build of ``vendor_root`` (``None``: no manifest)."""
    key = stat_key(os.path.join(os.path.realpath(vendor_root), MANIFEST))
    return None if key is None else _hash_manifest(*key)


@lru_cache(maxsize=8)
def _hash_manifest(path: str, size: int, mtime_ns: int, inode: int) -> str | None:
    _ = (size, mtime_ns, inode)  # part of the cache key: a rebuild is hashed again
    try:
        with open(path, "rb") as f:
            return "b" + hashlib.sha256(f.read()).hexdigest()[:12]
    except OSError:
        return None


def vendor_url(vendor_root: Path | str, rel: str) -> str:
    """The URL pages give ``web/vendor/<rel>``."""
    build = build_id(vendor_root)
    return f"/vendor/{build}/{rel}" if build else f"/vendor/{rel}"


class VendorAssets:
    """ASGI app for the ``/vendor`` mount (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = root
        self.current = Assets(root, immutable=True)
        self.revalidated = Assets(root, immutable=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.revalidated(scope, receive, send)
            return
        first, _, below = route_path(scope).lstrip("/").partition("/")
        if not _BUILD.fullmatch(first) or not below:
            await self.revalidated(scope, receive, send)
            return
        inner = dict(scope, root_path=f"{scope.get('root_path', '')}/{first}")
        app = self.current if first == build_id(self.root) else self.revalidated
        await app(inner, receive, send)
