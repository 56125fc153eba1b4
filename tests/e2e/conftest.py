"""End-to-end fixtures: a real Coview server, real browsers, real media.

The pieces come from Coview's own test kit, the pytest plugin that ships with the package
(``coview_server.pytest_plugin``, ``coview_server.testing``; ``docs/testing.md``): these
fixtures are the suite's short names for the kit's ``coview_*`` ones, and the names
below are re-exported for the test modules (``from .conftest import make_server``).

``scripts/test`` runs this suite inside a network namespace that has only loopback, so
WebRTC can only pick 127.0.0.1; Chromium is also told to resolve no host names.  Firefox
modules add a dead-end default route to that namespace while they run (the kit's
``network`` module) and fail if anything tried to use it.  Every page records its
requests and a test fails if any left our server's origin.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright

from coview_server.settings import REPO_DIR as ROOT
from coview_server.testing import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    AGENT_EMAIL,
    AGENT_PASSWORD,
    BASE_ARGS,
    CHROMIUM,
    FIREFOX,
    HYGIENE_ARGS,
    OUR_ORIGINS,
    SHOP_TITLE,
    OriginGuard,
    Server,
    free_port,
    login,
    make_server,
)

__all__ = [
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "AGENT_EMAIL",
    "AGENT_PASSWORD",
    "BASE_ARGS",
    "CHROMIUM",
    "FIREFOX",
    "HYGIENE_ARGS",
    "OUR_ORIGINS",
    "ROOT",
    "SHOP_TITLE",
    "OriginGuard",
    "Server",
    "free_port",
    "login",
    "make_server",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def server(coview_server: Server) -> Server:
    """The session's Coview server (the kit's ``coview_server``)."""
    return coview_server


@pytest.fixture(scope="session")
def playwright(coview_playwright: Playwright) -> Playwright:
    return coview_playwright


@pytest.fixture(scope="session")
def browser(coview_chromium: Browser) -> Browser:
    """Chromium, headless, capturing the demo shop's tab (the kit's ``coview_chromium``)."""
    return coview_chromium


@pytest.fixture(scope="module")
def firefox(coview_firefox: Browser) -> Browser:
    """Firefox ESR, headed on an Xvfb screen of its own inside the test namespace, with
    fake media and no network but loopback (the kit's ``coview_firefox``; module scope)."""
    return coview_firefox


@pytest.fixture
def contexts(coview_contexts: Callable[..., BrowserContext]) -> Callable[..., BrowserContext]:
    """``contexts(init_script=None, *, browser="chromium")``: a guarded, fresh context."""
    return coview_contexts
