"""The Coview pytest plugin: fixtures for end-to-end tests of a Coview installation.

Registered as ``pytest11`` entry point ``coview`` (``pyproject.toml``): installing Coview
with its ``test`` extra makes the fixtures available to any pytest run (``-p no:coview``
turns them off).  ``docs/testing.md`` shows a suite built on them.

Fixtures (all ``coview_*``):

``coview_server``      a Coview server (session): free port, throw-away SQLite database,
                       the admin and one agent (:data:`.server.AGENT_EMAIL`).
``coview_playwright``  the session's Playwright.
``coview_chromium``    Chromium (session), headless, capture of the shop tab by title.
``coview_firefox``     Firefox ESR (module): headed on an Xvfb screen it captures.
``coview_contexts``    factory of guarded browser contexts: ``coview_contexts(browser=...)``.
``coview_visitor``     a visitor on the demo shop, in the visitor's browser.
``coview_agent``       an agent signed in to the console, in the agent's browser.
``coview_chat``        ``(visitor, agent, text)``: the visitor wrote, the agent opened it.

Which browser: ``@pytest.mark.coview_browser("firefox")`` (both sides) or
``@pytest.mark.coview_browser(visitor="firefox", agent="chromium")``; unmarked tests run
once per ``--coview-browser NAME`` given (default ``chromium``; ``all``: every browser).
Every test gets the markers ``chromium`` and/or ``firefox`` of the browsers it uses, so
``-m "not firefox"`` runs a subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Playwright

    from .testing.browsers import Firefox
    from .testing.flows import Agent, Visitor
    from .testing.server import Server

BROWSERS = ("chromium", "firefox")
ContextFactory = Callable[..., "BrowserContext"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coview", "Coview end-to-end kit")
    group.addoption(
        "--coview-browser",
        action="append",
        default=[],
        choices=[*BROWSERS, "all"],
        help="browser for tests not marked coview_browser (repeatable; default chromium)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "coview_browser(name=None, *, visitor=None, agent=None): the browser(s) of the "
        "Coview kit's pages for this test (chromium or firefox)",
    )
    config.addinivalue_line("markers", "chromium: the test drives Chromium")
    config.addinivalue_line("markers", "firefox: the test drives Firefox")


def _chosen(config: pytest.Config) -> list[str]:
    names: list[str] = config.getoption("coview_browser") or ["chromium"]
    if "all" in names:
        return list(BROWSERS)
    return list(dict.fromkeys(names))


def _marked(item: pytest.Item | pytest.Function) -> tuple[str | None, str | None]:
    """(visitor, agent) browsers named by the item's ``coview_browser`` marker."""
    marker = item.get_closest_marker("coview_browser")
    if marker is None:
        return None, None
    both = marker.args[0] if marker.args else None
    for name in (both, marker.kwargs.get("visitor"), marker.kwargs.get("agent")):
        if name is not None and name not in BROWSERS:
            raise pytest.UsageError(f"coview_browser: unknown browser {name!r}")
    return marker.kwargs.get("visitor", both), marker.kwargs.get("agent", both)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "coview_browser" not in metafunc.fixturenames:
        return
    visitor, agent = _marked(metafunc.definition)
    if visitor is None or agent is None:
        names = _chosen(metafunc.config)
        metafunc.parametrize("coview_browser", names, ids=names, scope="function")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used: set[str] = set()
        fixtures = getattr(item, "fixturenames", ())
        if {"coview_firefox", "coview_firefox_session", "firefox"} & set(fixtures):
            used.add("firefox")
        if "coview_chromium" in fixtures:
            used.add("chromium")
        visitor, agent = _marked(item)
        callspec = getattr(item, "callspec", None)
        default = callspec.params.get("coview_browser") if callspec is not None else None
        if "coview_browser" in fixtures:
            used.update(n for n in (visitor or default, agent or default) if n)
        for name in sorted(used):
            item.add_marker(getattr(pytest.mark, name))


@pytest.fixture
def coview_browser(request: pytest.FixtureRequest) -> str:
    """The browser of the kit's pages when the marker names none (parametrized)."""
    visitor, agent = _marked(request.node)
    return visitor or agent or "chromium"


@pytest.fixture
def coview_visitor_browser(request: pytest.FixtureRequest, coview_browser: str) -> str:
    return _marked(request.node)[0] or coview_browser


@pytest.fixture
def coview_agent_browser(request: pytest.FixtureRequest, coview_browser: str) -> str:
    return _marked(request.node)[1] or coview_browser


@pytest.fixture(scope="session")
def coview_playwright() -> Iterator[Playwright]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def coview_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from .testing.server import make_server

    srv = make_server(tmp_path_factory.mktemp("coview-server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def coview_chromium(coview_playwright: Playwright) -> Iterator[Browser]:
    from .testing.browsers import launch_chromium

    browser = launch_chromium(coview_playwright)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def coview_firefox_session(
    coview_playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Firefox]:
    """The :class:`.browsers.Firefox` arrangement (Xvfb, dead-end route, guards); after
    its module, nothing may have tried to leave the test namespace."""
    from .testing.browsers import Firefox

    firefox = Firefox(coview_playwright, tmp_path_factory.mktemp("firefox"))
    try:
        firefox.start()
        yield firefox
        leaks = firefox.leaks()
    finally:
        firefox.close()
    assert leaks == [], f"Firefox tried to reach the network: {leaks}"


@pytest.fixture(scope="module")
def coview_firefox(coview_firefox_session: Firefox) -> Browser:
    """Firefox ESR, headed on its own Xvfb screen (module scope: the screen, the route
    and the browser live as long as the module's tests)."""
    assert coview_firefox_session.browser is not None
    return coview_firefox_session.browser


@pytest.fixture
def coview_contexts(
    request: pytest.FixtureRequest, coview_server: Server
) -> Iterator[ContextFactory]:
    """``make(init_script=None, *, browser="chromium")``: a fresh context of that browser,
    guarded against requests to any origin but our servers'.  Closed after the test."""
    from .testing.browsers import OriginGuard, new_context

    made: list[BrowserContext] = []
    guard = OriginGuard()

    def make(init_script: str | None = None, *, browser: str = "chromium") -> BrowserContext:
        if browser not in BROWSERS:
            raise ValueError(f"unknown browser {browser!r}")
        b: Browser = request.getfixturevalue(f"coview_{browser}")
        ctx = new_context(b, guard, init_script)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()
    assert guard.foreign == [], f"requests left our origin: {guard.foreign}"


@pytest.fixture
def coview_visitor(
    coview_contexts: ContextFactory, coview_server: Server, coview_visitor_browser: str
) -> Visitor:
    """A visitor on the demo shop (chat widget online), in its own context."""
    from .testing.flows import open_shop

    return open_shop(coview_contexts(browser=coview_visitor_browser), coview_server)


@pytest.fixture
def coview_agent(
    coview_contexts: ContextFactory, coview_server: Server, coview_agent_browser: str
) -> Agent:
    """The kit's agent, signed in to the console, in its own context."""
    from .testing.flows import open_console

    return open_console(coview_contexts(browser=coview_agent_browser), coview_server)


@pytest.fixture
def coview_chat(coview_agent: Agent, coview_visitor: Visitor) -> tuple[Visitor, Agent, str]:
    """The visitor wrote a message; the agent opened that conversation.

    The agent's page opens first: when both are Firefox, the shop's window opens on top
    of the console on the shared Xvfb screen, so the screen the visitor shares shows it."""
    from .testing.flows import unique

    hello = unique("Hello, I need help")
    coview_visitor.say(hello)
    coview_agent.open_conversation(hello)
    return coview_visitor, coview_agent, hello
