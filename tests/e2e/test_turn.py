"""TURN end to end, against a real coturn started by the tests on a loopback port.

* coturn accepts the credentials Coview mints and refuses expired, wrong-secret and tampered
  ones, with coturn's own ``turnutils_uclient`` as the independent client;
* Coview's TURN check allocates on it, and warns (without the secret) when it cannot;
* ``coview turn-config`` prints a configuration coturn 4.6 takes without complaint;
* a share with relay-only ICE (``ice_transport_policy = "relay"``) shows the shop at the agent,
  whose quality panel says "Relayed (TURN)", over UDP and over TCP.

coturn runs in the foreground with ``allow-loopback-peers`` (tests only: the browsers'
relayed addresses are loopback ones) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import expect

from coview_server import turn as T
from coview_server.settings import Settings

from .conftest import make_server
from .coturn import UCLIENT, Coturn, free_udp_and_tcp_port, loopback_config, start_coturn
from .flows import assert_sees_shop, go_live, start_chat

SECRET = "e2e-turn-current-" + secrets.token_hex(8)
OLD_SECRET = "e2e-turn-previous-" + secrets.token_hex(8)
WRONG_SECRET = "e2e-turn-wrong-" + secrets.token_hex(8)
REALM = "coview.test"


@pytest.fixture(scope="session")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    tmp = tmp_path_factory.mktemp("coturn")
    port = free_udp_and_tcp_port()
    config = [
        *loopback_config(tmp, port),
        "min-port=40000",
        "max-port=40999",
        f"realm={REALM}",
        "use-auth-secret",
        f"static-auth-secret={SECRET}",
        f"static-auth-secret={OLD_SECRET}",
        "fingerprint",
        "no-multicast-peers",
    ]
    server = start_coturn(tmp, config, port)
    yield server
    server.stop()


R = TypeVar("R")


def run(coro: Coroutine[Any, Any, R]) -> R:
    """``asyncio.run`` in a thread of its own: Playwright's sync API keeps an event loop
    running in the main thread once a browser test ran in this process."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def settings(**values: Any) -> Settings:
    return Settings.load(overrides=values, environ={})


# --- (a) coturn, as an independent peer, judges the credentials Coview mints ------------


def uclient(coturn: Coturn, user: str, password: str, tcp: bool = False) -> str:
    """Allocate two relays and exchange packets between them; returns the output."""
    args = [UCLIENT, "-v", "-y", "-n", "3", "-p", str(coturn.port), "-u", user, "-w", password]
    if tcp:
        args.insert(1, "-t")
    done = subprocess.run([*args, "127.0.0.1"], capture_output=True, text=True, timeout=60)
    output = f"exit status {done.returncode}\n{done.stdout}{done.stderr}"
    if done.returncode == 0:
        return output
    raise AssertionError(output)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET], ids=["current", "previous"])
def test_coturn_accepts_fresh_credentials(coturn: Coturn, secret: str, tcp: bool) -> None:
    cred = T.mint(secret, ttl_s=600)
    output = uclient(coturn, cred.username, cred.password, tcp=tcp)
    assert re.search(r"Total lost packets 0 \(", output), output
    log = coturn.wait_for_log(
        f"user <{cred.username}>: incoming packet ALLOCATE processed, success"
    )
    assert f"user <{cred.username}>: incoming packet ALLOCATE processed, success" in log


def _expired() -> tuple[str, str]:
    cred = T.mint(SECRET, ttl_s=600, now=time.time() - 700)
    return cred.username, cred.password


def _wrong_secret() -> tuple[str, str]:
    cred = T.mint(WRONG_SECRET, ttl_s=600)
    return cred.username, cred.password


def _later_expiry() -> tuple[str, str]:
    cred = T.mint(SECRET, ttl_s=600)
    return f"{cred.expires_at + 86400}:{cred.username.split(':')[1]}", cred.password


def _other_id() -> tuple[str, str]:
    cred = T.mint(SECRET, ttl_s=600)
    return f"{cred.expires_at}:{T.new_opaque_id()}", cred.password


def _tampered_password() -> tuple[str, str]:
    cred = T.mint(SECRET, ttl_s=600)
    first = "A" if cred.password[0] != "A" else "B"
    return cred.username, first + cred.password[1:]


@pytest.mark.parametrize(
    "forge", [_expired, _wrong_secret, _later_expiry, _other_id, _tampered_password]
)
def test_coturn_rejects_bad_credentials(coturn: Coturn, forge: Any) -> None:
    user, password = forge()
    with pytest.raises(AssertionError) as failed:
        uclient(coturn, user, password)
    output = str(failed.value)
    assert "exit status 0" not in output
    assert "allocate response received" in output  # coturn answered: refused, not unreachable
    refusal = f"user <{user}>: incoming packet message processed, error 401: Unauthorized"
    assert refusal in coturn.wait_for_log(refusal)
    assert f"user <{user}>: incoming packet ALLOCATE processed, success" not in coturn.log()
    # Coview's own client reads the same 401.
    with pytest.raises(T.TurnError) as refused:
        run(T.allocate(T.parse_turn_url(coturn.url()), user, password))
    assert refused.value.code == 401


# --- (b) Coview's TURN check --------------------------------------------------------------


def test_turn_check_passes_against_coturn(coturn: Coturn, caplog: Any) -> None:
    s = settings(turn_urls=[coturn.url("udp"), coturn.url("tcp")], turn_secrets=[SECRET])
    with caplog.at_level(logging.DEBUG, logger="coview"):
        results = run(T.check(s))
        T.report(results)
    assert [r.url for r in results] == [coturn.url("udp"), coturn.url("tcp")]
    assert all(r.ok for r in results), results
    assert all(r.detail.startswith("relayed address 127.0.0.1:") for r in results)
    assert caplog.text.count("TURN check passed") == 2
    # The relays were freed at once (Refresh with lifetime 0), not left to expire.
    assert coturn.log().count("lifetime=0") >= 2


def test_turn_check_warns_on_a_wrong_secret(coturn: Coturn, caplog: Any) -> None:
    s = settings(turn_urls=[coturn.url("udp"), coturn.url("tcp")], turn_secrets=[WRONG_SECRET])
    with caplog.at_level(logging.DEBUG, logger="coview"):
        results = run(T.check(s))
        T.report(results)
    assert not any(r.ok for r in results)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("401 Unauthorized" in w and "static-auth-secret" in w for w in warnings)
    assert WRONG_SECRET not in caplog.text


def test_server_warns_at_start_up_when_coturn_refuses_it(coturn: Coturn, tmp_path: Path) -> None:
    server = make_server(tmp_path, COVIEW_TURN_URLS=coturn.url(), COVIEW_TURN_SECRETS=WRONG_SECRET)
    try:
        deadline = time.monotonic() + 15
        while "TURN check failed" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
        assert f"TURN check failed for {coturn.url()}: 401 Unauthorized" in log, log
        assert WRONG_SECRET not in log
    finally:
        server.stop()


def test_generated_coturn_config_is_accepted(tmp_path: Path) -> None:
    """`coview turn-config` output runs coturn 4.6 as is, and Coview's check passes on it."""
    port = free_udp_and_tcp_port()
    env = {
        "COVIEW_TURN_URLS": f"turn:127.0.0.1:{port},turn:127.0.0.1:{port}?transport=tcp",
        "COVIEW_TURN_SECRETS": f"{SECRET},{OLD_SECRET}",
    }
    generated = subprocess.run(
        [sys.executable, "-m", "coview_server", "turn-config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert f"listening-port={port}\n" in generated
    # Production logs to syslog; the test logs to a file and listens on loopback only.
    lines = [line for line in generated.splitlines() if line != "syslog"]
    coturn = start_coturn(tmp_path, [*lines, *loopback_config(tmp_path, port)], port)
    try:
        results = run(
            T.check(settings(turn_urls=env["COVIEW_TURN_URLS"], turn_secrets=[OLD_SECRET]))
        )
        assert all(r.ok for r in results) and len(results) == 2, results
        out = (tmp_path / "turnserver.out").read_text(errors="replace") + coturn.log()
        assert "Bad configuration format" not in out
        assert "Black listing: 192.168.0.0-192.168.255.255" in out
    finally:
        coturn.stop()


# --- (c) a share forced through TURN ------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_share_through_turn_only(contexts: Any, coturn: Coturn, tmp_path: Path, transport: str):
    before = len(coturn.log())
    server = make_server(
        tmp_path,
        COVIEW_TURN_URLS=coturn.url(transport),
        COVIEW_TURN_SECRETS=SECRET,
        COVIEW_ICE_TRANSPORT_POLICY="relay",
    )
    try:
        visitor, agent, _ = start_chat(contexts(), contexts(), server)
        go_live(visitor, agent)
        assert_sees_shop(agent)
        quality = agent.page.get_by_role("table", name="Connection quality")
        expect(quality.get_by_role("row", name=re.compile("Path"))).to_contain_text(
            "Relayed (TURN)", timeout=10000
        )
        assert "TURN check failed" not in server.log()
    finally:
        server.stop()
    log = coturn.log()[before:]
    # Both browsers allocated relays with the credentials Coview minted for them.
    assert log.count("incoming packet ALLOCATE processed, success") >= 3  # with the check's
    tcp_connections = log.count("tcp or tls connected to")
    if transport == "tcp":
        assert tcp_connections >= 3, log[-3000:]
    else:
        assert tcp_connections == 0, log[-3000:]
