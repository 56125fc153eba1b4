"""Coview's test kit: a real server, real browsers, the visitor and agent flows.

Use it through the pytest plugin (:mod:`coview_server.pytest_plugin`, fixtures
``coview_*``, see ``docs/testing.md``) or import the pieces::

    from coview_server.testing import go_live, assert_sees_colours

Needs the ``test`` extra (pytest, Playwright) and, for the browsers, Debian's
``chromium``, ``firefox-esr`` and ``xvfb`` (``scripts/bootstrap --test``).
"""

from .browsers import (
    BASE_ARGS,
    CHROMIUM,
    FIREFOX,
    FIREFOX_ENV,
    HYGIENE_ARGS,
    SHOP_TITLE,
    Firefox,
    OriginGuard,
    launch_chromium,
    new_context,
)
from .firefox import PREFS as FIREFOX_PREFS
from .flows import (
    RECORD_PEER_CONNECTIONS,
    SHOP_COLOURS,
    Agent,
    Visitor,
    assert_sees_colours,
    assert_sees_shop,
    browser_name,
    go_live,
    login,
    open_console,
    open_shop,
    selected_pairs,
    show_shop,
    start_chat,
    start_chat_at,
    unique,
    wait_frames_advance,
    wait_selected_pair,
)
from .server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    AGENT_EMAIL,
    AGENT_NAME,
    AGENT_PASSWORD,
    OUR_ORIGINS,
    Server,
    free_port,
    make_server,
)

__all__ = [
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
    "AGENT_EMAIL",
    "AGENT_NAME",
    "AGENT_PASSWORD",
    "BASE_ARGS",
    "CHROMIUM",
    "FIREFOX",
    "FIREFOX_ENV",
    "FIREFOX_PREFS",
    "HYGIENE_ARGS",
    "OUR_ORIGINS",
    "RECORD_PEER_CONNECTIONS",
    "SHOP_COLOURS",
    "SHOP_TITLE",
    "Agent",
    "Firefox",
    "OriginGuard",
    "Server",
    "Visitor",
    "assert_sees_colours",
    "assert_sees_shop",
    "browser_name",
    "free_port",
    "go_live",
    "launch_chromium",
    "login",
    "make_server",
    "new_context",
    "open_console",
    "open_shop",
    "selected_pairs",
    "show_shop",
    "start_chat",
    "start_chat_at",
    "unique",
    "wait_frames_advance",
    "wait_selected_pair",
]
