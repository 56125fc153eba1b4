"""Steps of the visitor/agent flows, shared by the end-to-end tests.

They live in Coview's test kit (``coview_server.testing.flows``), which QA teams use too;
this module keeps the suite's imports (``from .flows import go_live``) short.
"""

from __future__ import annotations

from coview_server.testing.flows import (
    RECORD_PEER_CONNECTIONS,
    SHOP_COLOURS,
    Agent,
    Visitor,
    assert_sees_colours,
    assert_sees_shop,
    browser_name,
    go_live,
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

__all__ = [
    "RECORD_PEER_CONNECTIONS",
    "SHOP_COLOURS",
    "Agent",
    "Visitor",
    "assert_sees_colours",
    "assert_sees_shop",
    "browser_name",
    "go_live",
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
