"""Per-address WebSocket admission (``limits.AddressGate``) and the HTTP body cap.

The gate is tested on its own with a fake clock, then through the real server over real
sockets from several loopback source addresses: a flood of connections from one address is
refused with a coded error while other addresses are served.  The body cap's hostile cases
are in test_http_hostile.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from livesrv import live_server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from coview import protocol as P
from coview_server.limits import AddressGate, fit_frame
from coview_server.settings import Settings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _isolated(isolated_app: None) -> None:
    pass


# --- the gate alone -----------------------------------------------------------------------------


def test_open_sockets_are_capped_per_address() -> None:
    gate = AddressGate(max_open=2, rate=100, burst=100)
    assert gate.admit("a", 0.0) is None
    assert gate.admit("a", 0.0) is None
    refusal = gate.admit("a", 0.0)
    assert refusal is not None and "at most 2" in refusal
    assert gate.admit("b", 0.0) is None  # another address is not affected
    gate.release("a")
    assert gate.admit("a", 0.0) is None
    for _ in range(3):
        gate.release("a")
    assert "a" not in gate.open  # released to zero: forgotten (and never negative)
    assert gate.open == {"b": 1}


def test_new_sockets_are_rate_limited_per_address() -> None:
    gate = AddressGate(max_open=1000, rate=2.0, burst=3)
    assert [gate.admit("a", 10.0) for _ in range(3)] == [None, None, None]
    assert gate.admit("a", 10.0) is not None
    assert gate.admit("a", 10.2) is not None  # 0.4 token: still refused (and not spent)
    assert gate.admit("a", 10.5) is None  # one token refilled after 0.5 s
    assert gate.admit("b", 10.5) is None
    later = [gate.admit("a", 100.0) for _ in range(4)]  # refilled to the burst, no more
    assert later[:3] == [None, None, None] and later[3] is not None


def test_refill_never_exceeds_the_burst() -> None:
    gate = AddressGate(max_open=1000, rate=10.0, burst=2)
    assert gate.admit("a", 0.0) is None
    results = [gate.admit("a", 3600.0) for _ in range(3)]
    assert results[:2] == [None, None] and results[2] is not None


def test_the_rate_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AddressGate, "MAX_ADDRESSES", 100)
    gate = AddressGate(max_open=10, rate=1.0, burst=5)
    for i in range(500):
        assert gate.admit(f"10.0.{i // 256}.{i % 256}", float(i)) is None
        gate.release(f"10.0.{i // 256}.{i % 256}")
    assert len(gate.buckets) <= 101
    assert gate.open == {}


@pytest.mark.parametrize("values", [{"max_open": 0}, {"rate": 0.0}, {"rate": -1.0}, {"burst": 0.5}])
def test_nonsense_limits_are_refused(values: dict[str, Any]) -> None:
    args: dict[str, Any] = {"max_open": 1, "rate": 1.0, "burst": 1.0, **values}
    with pytest.raises(ValueError):
        AddressGate(**args)


@pytest.mark.parametrize(
    "setting", [{"ws_address_max": "0"}, {"ws_address_rate": "0"}, {"ws_address_burst": "0"}]
)
def test_settings_validate_the_limits(setting: dict[str, str]) -> None:
    env = {"COVIEW_" + k.upper(): v for k, v in setting.items()}
    with pytest.raises(ValueError):
        Settings.load(environ=env)


def test_settings_from_the_environment() -> None:
    s = Settings.load(
        environ={
            "COVIEW_WS_ADDRESS_MAX": "5000",
            "COVIEW_WS_ADDRESS_RATE": "500",
            "COVIEW_WS_ADDRESS_BURST": "5000",
        }
    )
    assert (s.ws_address_max, s.ws_address_rate, s.ws_address_burst) == (5000, 500.0, 5000.0)
    d = Settings()
    assert (d.ws_address_max, d.ws_address_rate, d.ws_address_burst) == (200, 2.0, 100.0)


# --- through the server -------------------------------------------------------------------------


async def _open(url: str, src: str) -> ClientConnection:
    host = url.removeprefix("http://")
    return await connect(f"ws://{host}/ws", origin=url, local_addr=(src, 0))  # type: ignore[arg-type]


async def _handshake(ws: ClientConnection) -> dict[str, Any]:
    await ws.send(P.encode(P.make("handshake", versions=["1"], role="visitor")))
    return P.decode(await ws.recv(), P.S2C)


async def _refused(ws: ClientConnection) -> None:
    err = P.decode(await ws.recv(), P.S2C)
    assert err["type"] == "error" and err["code"] == P.RATE_LIMITED, err
    assert err["ref"] == "handshake" and err.get("fatal") is True
    with pytest.raises(ConnectionClosed):
        await ws.recv()
    assert ws.close_code == 1008


def _run(settings: Settings, scenario: Any) -> None:
    with live_server(settings) as url:
        asyncio.run(scenario(url))


def test_one_address_may_hold_only_so_many_sockets(tmp_path: Path) -> None:
    async def scenario(url: str) -> None:
        held = [await _open(url, "127.3.0.1") for _ in range(5)]
        for ws in held:
            assert (await _handshake(ws))["type"] == "welcome"
        await _refused(await _open(url, "127.3.0.1"))
        other = await _open(url, "127.3.0.2")  # another address: served
        assert (await _handshake(other))["type"] == "welcome"
        await held.pop().close()
        await asyncio.sleep(0.2)  # the server notices the close
        again = await _open(url, "127.3.0.1")
        assert (await _handshake(again))["type"] == "welcome"
        for ws in [*held, other, again]:
            await ws.close()

    _run(make_settings(tmp_path, ws_address_max=5), scenario)


def test_a_connection_flood_from_one_address_is_refused(tmp_path: Path) -> None:
    async def scenario(url: str) -> None:
        first = [await _open(url, "127.3.0.1") for _ in range(10)]
        flood = [await _open(url, "127.3.0.1") for _ in range(20)]
        for ws in flood:
            await _refused(ws)
        bystander = await _open(url, "127.3.0.9")
        assert (await _handshake(bystander))["type"] == "welcome"
        for ws in first:  # admitted ones work normally
            assert (await _handshake(ws))["type"] == "welcome"
            await ws.send(P.encode(P.make("ping", t=1)))
            assert P.decode(await ws.recv(), P.S2C) == P.make("pong", t=1)
        for ws in [*first, bystander]:
            await ws.close()

    # Refused attempts spend nothing: the bucket stays empty while the flood lasts.
    _run(make_settings(tmp_path, ws_address_rate=0.01, ws_address_burst=10), scenario)


# --- frames the server sends stay within the protocol's cap ---------------------------------


def _message(i: int, text: str) -> dict[str, Any]:
    return {"id": i, "sender": "visitor", "text": text, "at": 1.0 + i, "client_id": f"c{i}"}


def test_a_history_over_one_frame_keeps_its_newest_messages() -> None:
    messages = [_message(i, f"{i} " + "x" * 3990) for i in range(40)]  # ~160 KB
    text = fit_frame(P.make("history", conversation=7, messages=messages))
    assert text is not None and len(text.encode()) <= P.MAX_MESSAGE_BYTES
    kept = P.decode(text, P.S2C)["messages"]
    assert 10 < len(kept) < 40
    assert kept == messages[-len(kept) :]  # the newest, still oldest first


def test_a_history_of_multibyte_text_is_measured_as_sent() -> None:
    # Escaped on the wire (\\ud83d\\ude00: 12 bytes for one emoji), so fewer fit.
    messages = [_message(i, "\U0001f600" * 4000) for i in range(10)]
    text = fit_frame(P.make("history", conversation=7, messages=messages))
    assert text is not None and len(text.encode()) <= P.MAX_MESSAGE_BYTES
    kept = P.decode(text, P.S2C)["messages"]
    assert kept == messages[-len(kept) :] and 0 < len(kept) < 2 * P.MAX_MESSAGE_BYTES // 48000


def test_a_long_conversation_list_keeps_the_most_recent_and_the_table_s_length() -> None:
    items = [{"id": i, "status": "waiting", "last_text": "y" * 140} for i in range(3000)]
    text = fit_frame(P.make("conversations", items=items))
    assert text is not None and len(text.encode()) <= P.MAX_MESSAGE_BYTES
    kept = P.decode(text, P.S2C)["items"]
    assert kept == items[: len(kept)] and 100 < len(kept) <= 1000
    small = [{"id": i} for i in range(1500)]  # short items: the table's 1000 still holds
    kept = P.decode(fit_frame(P.make("conversations", items=small)) or "", P.S2C)["items"]
    assert kept == small[:1000]


def test_frames_within_the_cap_are_sent_as_they_are() -> None:
    msg = P.make("history", conversation=7, messages=[_message(1, "hello")])
    assert fit_frame(msg) == P.encode(msg)
    offer = P.make("offer", pc="p", sdp="v=0")
    assert fit_frame(offer) == P.encode(offer)


def test_anything_else_over_the_cap_is_not_sent() -> None:
    # An offer whose sdp is within its 60 000 characters but escapes to far more bytes.
    assert fit_frame(P.make("offer", pc="p", sdp="\u00e9" * 30000)) is None
