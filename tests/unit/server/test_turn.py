"""TURN REST credentials, the ICE servers each connection gets, the STUN/TURN codec and the
relay check (against an in-process fake TURN server; tests/e2e/test_turn.py uses coturn)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import socket
import struct
import time
import types
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient

from coview import protocol as P
from coview_server import cli, turn as T
from coview_server.app import create_app
from coview_server.settings import Settings

pytestmark = pytest.mark.timeout(30)

SECRET = "coview-test-secret-0001"
OLD_SECRET = "coview-test-secret-0000"
# Computed independently:
#   printf %s 1700003600:3b6cc4d2e9f1 | openssl dgst -sha1 -hmac SECRET -binary | base64
VECTOR_USER = "1700003600:3b6cc4d2e9f1"
VECTOR_PASSWORD = "Slw4/ocFFJVxgdSjCcL6Yg4YcgY="
VECTOR_PASSWORD_OLD = "iITXtnc8AAP++abwcgJWYuMhNyI="


R = TypeVar("R")


def run(coro: Coroutine[Any, Any, R]) -> R:
    """``asyncio.run`` in a thread of its own: Playwright's sync API keeps an event loop
    running in the main thread once a browser test ran in this process."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def settings(**values: Any) -> Settings:
    return Settings.load(overrides=values, environ={})


def turn_settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "turn_urls": ["turn:turn.example.com:3478", "turn:turn.example.com:3478?transport=tcp"],
        "turn_secrets": [SECRET, OLD_SECRET],
    }
    return settings(**{**base, **values})


# --- credentials ----------------------------------------------------------------------


def test_mint_matches_a_fixed_vector() -> None:
    cred = T.mint(SECRET, ttl_s=3600, now=1_700_000_000.0, opaque="3b6cc4d2e9f1")
    assert cred.username == VECTOR_USER
    assert cred.password == VECTOR_PASSWORD
    assert cred.expires_at == 1_700_003_600
    assert T.rest_password(OLD_SECRET, VECTOR_USER) == VECTOR_PASSWORD_OLD


def test_password_is_base64_hmac_sha1_of_the_username() -> None:
    cred = T.mint(SECRET, ttl_s=60)
    digest = hmac.new(SECRET.encode(), cred.username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(cred.password) == digest


def test_ttl_sets_the_expiry() -> None:
    assert T.mint(SECRET, now=1000.0).expires_at == 1000 + 3600  # default TTL
    assert T.mint(SECRET, ttl_s=90, now=1000.9).expires_at == 1090
    before = time.time()
    cred = T.mint(SECRET, ttl_s=600)
    assert before + 599 <= int(cred.username.split(":")[0]) <= time.time() + 600
    with pytest.raises(ValueError):
        T.mint(SECRET, ttl_s=0)
    with pytest.raises(ValueError):
        T.mint("", ttl_s=60)


def test_username_is_an_expiry_and_a_random_opaque_id() -> None:
    names = {T.mint(SECRET, now=1000.0).username for _ in range(50)}
    assert len(names) == 50
    for name in names:
        expiry, opaque = name.split(":")
        assert expiry == "4600" and len(opaque) >= 20
    with pytest.raises(ValueError):
        T.mint(SECRET, opaque="alice:bob")


def test_rotation_mints_with_the_first_secret_only() -> None:
    s = turn_settings()
    entry = T.ice_servers(s)[-1]
    assert entry["credential"] == T.rest_password(SECRET, entry["username"])
    assert entry["credential"] != T.rest_password(OLD_SECRET, entry["username"])
    rotated = turn_settings(turn_secrets=[OLD_SECRET, SECRET])
    entry = T.ice_servers(rotated)[-1]
    assert entry["credential"] == T.rest_password(OLD_SECRET, entry["username"])
    config = T.coturn_config(s)
    assert f"static-auth-secret={SECRET}\nstatic-auth-secret={OLD_SECRET}\n" in config


# --- ICE servers ----------------------------------------------------------------------


def test_no_turn_means_the_static_list_unchanged() -> None:
    static = [{"urls": "stun:static.example.org"}]
    assert T.ice_servers(settings()) == []
    assert T.ice_servers(settings(ice_servers=static)) == static


def test_ice_list_shapes() -> None:
    static = {"urls": ["turn:legacy.example.org"], "username": "u", "credential": "c"}
    urls = [
        "turn:turn.example.com:3478",
        "turn:turn.example.com:3478?transport=tcp",
        "turns:turn.example.com:443?transport=tcp",
    ]
    s = turn_settings(
        ice_servers=[static], stun_urls=["stun:turn.example.com:3478"], turn_urls=urls
    )
    servers = T.ice_servers(s, now=1_700_000_000.0)
    assert servers[0] == static  # static entries as they are, first
    assert servers[1] == {"urls": ["stun:turn.example.com:3478"]}
    assert set(servers[2]) == {"urls", "username", "credential"}
    assert servers[2]["urls"] == urls
    assert servers[2]["username"].startswith("1700003600:")
    assert len(servers) == 3
    # Fits the protocol: welcome.ice_servers is a list of at most 16 JSON objects.
    P.make("welcome", version="1", role="agent", conn="c", ice_servers=servers, info={})


def test_every_connection_gets_its_own_credential() -> None:
    per_conn = T.ice_servers_for(turn_settings())
    alice = types.SimpleNamespace(user=types.SimpleNamespace(display_name="Alice Agent"))
    first, second = per_conn(alice), per_conn(alice)
    assert first[-1]["username"] != second[-1]["username"]
    assert "Alice" not in repr(first)


def test_stun_only() -> None:
    s = settings(stun_urls="stun:a.example.org, stun:b.example.org:19302")
    assert T.ice_servers(s) == [{"urls": ["stun:a.example.org", "stun:b.example.org:19302"]}]


# --- settings -------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    s = Settings.load(
        environ={
            "COVIEW_STUN_URLS": "stun:turn.example.com",
            "COVIEW_TURN_URLS": "turn:turn.example.com, turn:turn.example.com?transport=tcp",
            "COVIEW_TURN_SECRETS": f"{SECRET},{OLD_SECRET}",
            "COVIEW_TURN_TTL_S": "900",
            "COVIEW_TURN_CHECK_INTERVAL_S": "60",
            "COVIEW_ICE_TRANSPORT_POLICY": "relay",
        }
    )
    assert s.stun_urls == ("stun:turn.example.com",)
    assert s.turn_urls == ("turn:turn.example.com", "turn:turn.example.com?transport=tcp")
    assert s.turn_secrets == (SECRET, OLD_SECRET)
    assert s.turn_ttl_s == 900.0 and s.turn_check_interval_s == 60.0
    assert s.ice_transport_policy == "relay"


def test_settings_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "coview.toml"
    path.write_text(
        "[coview]\n"
        'turn_urls = ["turn:t.example.com", "turns:t.example.com:443?transport=tcp"]\n'
        f'turn_secrets = ["{SECRET}"]\n'
        "turn_ttl_s = 1200\n"
    )
    s = Settings.load(str(path), environ={})
    assert s.turn_urls == ("turn:t.example.com", "turns:t.example.com:443?transport=tcp")
    assert s.turn_secrets == (SECRET,) and s.turn_ttl_s == 1200.0
    assert s.turn_check_interval_s == 300.0 and s.ice_transport_policy == "all"


@pytest.mark.parametrize(
    "values",
    [
        {"turn_urls": ["turn:t.example.com"]},  # no secret
        {"turn_urls": ["http://t.example.com"], "turn_secrets": [SECRET]},
        {"turn_urls": ["turn:t.example.com?transport=sctp"], "turn_secrets": [SECRET]},
        {"turn_urls": ["turns:t.example.com?transport=udp"], "turn_secrets": [SECRET]},
        {"turn_urls": ["turn:t.example.com:99999"], "turn_secrets": [SECRET]},
        {"stun_urls": ["turn:t.example.com"]},
        {"turn_secrets": ["short"]},
        {"turn_secrets": ["has a space in the middle"]},
        {"turn_ttl_s": 0},
        {"turn_check_interval_s": -1},
        {"ice_transport_policy": "none"},
    ],
)
def test_bad_turn_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as refused:
        settings(**values)
    for secret in values.get("turn_secrets", []):
        assert secret not in str(refused.value)


def test_parse_turn_url() -> None:
    url = T.parse_turn_url("turn:turn.example.com")
    assert (url.host, url.port, url.transport, url.secure) == (
        "turn.example.com",
        3478,
        "udp",
        False,
    )
    url = T.parse_turn_url("turn:[2001:db8::1]:3479?transport=tcp")
    assert (url.host, url.port, url.transport) == ("2001:db8::1", 3479, "tcp")
    url = T.parse_turn_url("turns:turn.example.com:443?transport=tcp")
    assert (url.port, url.transport, url.secure) == (443, "tcp", True)
    assert T.parse_turn_url("turns:turn.example.com").port == 5349


def test_secrets_stay_out_of_repr() -> None:
    s = turn_settings()
    cred = T.mint(SECRET)
    assert SECRET not in repr(s) and OLD_SECRET not in repr(s) and SECRET not in str(s)
    assert cred.password not in repr(cred) and cred.username in repr(cred)


# --- coturn configuration and the CLI -------------------------------------------------


def test_coturn_config_matches_the_settings() -> None:
    s = turn_settings(
        turn_urls=["turn:turn.example.com:3478", "turns:turn.example.com:443?transport=tcp"]
    )
    lines = T.coturn_config(s).splitlines()
    for needed in (
        "listening-port=3478",
        "realm=turn.example.com",
        "use-auth-secret",
        f"static-auth-secret={SECRET}",
        f"static-auth-secret={OLD_SECRET}",
        "fingerprint",
        "no-cli",
        "#tls-listening-port=443",
        "#cert=/etc/coturn/certs/fullchain.pem",
        "#pkey=/etc/coturn/certs/privkey.pem",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=169.254.0.0-169.254.255.255",
        "denied-peer-ip=::-::1",
        "denied-peer-ip=fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ):
        assert needed in lines, needed
    assert any(line.startswith("user-quota=") for line in lines)
    assert any(line.startswith("total-quota=") for line in lines)
    assert "no-tls" not in lines and "allow-loopback-peers" not in lines
    assert "realm=support.example.com" in T.coturn_config(s, realm="support.example.com")


def test_cli_turn_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COVIEW_TURN_URLS", "turn:turn.example.com:3479")
    monkeypatch.setenv("COVIEW_TURN_SECRETS", SECRET)
    assert cli.main(["turn-config", "--realm", "example.com"]) == 0
    out = capsys.readouterr().out
    assert "listening-port=3479" in out and "realm=example.com" in out
    assert f"static-auth-secret={SECRET}" in out

    monkeypatch.delenv("COVIEW_TURN_URLS")
    monkeypatch.delenv("COVIEW_TURN_SECRETS")
    assert cli.main(["turn-config"]) == 1
    assert "turn_urls" in capsys.readouterr().err


# --- STUN messages --------------------------------------------------------------------


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 5769 §2.1: request with a short-term credential (padding with spaces).
RFC5769_REQUEST = _hex("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
# RFC 5769 §2.2 and §2.3: responses with IPv4 and IPv6 XOR-MAPPED-ADDRESS.
RFC5769_RESPONSE_V4 = _hex("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
RFC5769_RESPONSE_V6 = _hex("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")
RFC5769_SHORT_TERM_KEY = b"VOkJxbRl1RmTxUk/WvJxBt"
# RFC 5769 §2.4: request with a long-term credential (zero padding, no FINGERPRINT).
RFC5769_LONG_TERM = _hex("""
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79
                36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66""")
RFC5769_USER = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
RFC5769_NONCE = b"f//499k954d6OL34oL9FSTvy64sA"


def test_encode_long_term_request_matches_rfc5769() -> None:
    key = T.long_term_key(RFC5769_USER, "example.org", "TheMatrIX")
    data = T.encode(
        T.BINDING,
        T.REQUEST,
        _hex("78 ad 34 33 c6 ad 72 c0 29 da 41 2e"),
        [
            (T.ATTR_USERNAME, RFC5769_USER.encode()),
            (T.ATTR_NONCE, RFC5769_NONCE),
            (T.ATTR_REALM, b"example.org"),
        ],
        key=key,
        fingerprint=False,
    )
    assert data == RFC5769_LONG_TERM
    msg = T.decode(data)
    assert msg.text(T.ATTR_USERNAME) == RFC5769_USER and msg.check_integrity(key)
    assert not msg.check_integrity(T.long_term_key(RFC5769_USER, "example.org", "wrong"))


def test_decode_rfc5769_vectors() -> None:
    req = T.decode(RFC5769_REQUEST)
    assert (req.method, req.cls) == (T.BINDING, T.REQUEST)
    assert (
        req.text(T.ATTR_USERNAME) == "evtj:h6vY" and req.text(T.ATTR_SOFTWARE) == "STUN test client"
    )
    assert req.check_integrity(RFC5769_SHORT_TERM_KEY) and req.check_fingerprint()
    v4 = T.decode(RFC5769_RESPONSE_V4)
    assert (v4.method, v4.cls) == (T.BINDING, T.SUCCESS)
    assert v4.address(T.ATTR_XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert v4.check_integrity(RFC5769_SHORT_TERM_KEY) and v4.check_fingerprint()
    v6 = T.decode(RFC5769_RESPONSE_V6)
    assert v6.address(T.ATTR_XOR_MAPPED_ADDRESS) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert v6.check_integrity(RFC5769_SHORT_TERM_KEY) and v6.check_fingerprint()
    # One flipped bit anywhere before MESSAGE-INTEGRITY breaks it.
    tampered = bytearray(RFC5769_RESPONSE_V4)
    tampered[30] ^= 1
    assert not T.decode(bytes(tampered)).check_integrity(RFC5769_SHORT_TERM_KEY)
    assert not T.decode(bytes(tampered)).check_fingerprint()


def test_message_types() -> None:
    assert T.message_type(T.ALLOCATE, T.REQUEST) == 0x0003
    assert T.message_type(T.ALLOCATE, T.SUCCESS) == 0x0103
    assert T.message_type(T.ALLOCATE, T.ERROR) == 0x0113
    assert T.message_type(T.REFRESH, T.ERROR) == 0x0114
    assert T.message_type(T.BINDING, T.SUCCESS) == 0x0101
    for method in (T.BINDING, T.ALLOCATE, T.REFRESH, 0x0FFF):
        for cls in (T.REQUEST, T.INDICATION, T.SUCCESS, T.ERROR):
            assert T.split_type(T.message_type(method, cls)) == (method, cls)


def test_allocate_request_bytes() -> None:
    tid = bytes(range(12))
    data = T.encode(T.ALLOCATE, T.REQUEST, tid, [(T.ATTR_REQUESTED_TRANSPORT, b"\x11\0\0\0")])
    assert data[:20] == _hex("00 03 00 10 21 12 a4 42") + tid
    assert data[20:28] == _hex("00 19 00 04 11 00 00 00")
    assert data[28:32] == _hex("80 28 00 04")
    assert T.decode(data).check_fingerprint()
    key = T.long_term_key("u", "r", "p")
    signed = T.decode(T.encode(T.ALLOCATE, T.REQUEST, tid, [(T.ATTR_USERNAME, b"u")], key=key))
    assert signed.check_integrity(key) and signed.check_fingerprint()
    assert [k for k, _ in signed.attributes] == [
        T.ATTR_USERNAME,
        T.ATTR_MESSAGE_INTEGRITY,
        T.ATTR_FINGERPRINT,
    ]


def test_error_code_attribute() -> None:
    value = struct.pack("!HBB", 0, 4, 38) + b"Stale Nonce"
    data = T.encode(T.ALLOCATE, T.ERROR, bytes(12), [(T.ATTR_ERROR_CODE, value)])
    assert T.decode(data).error() == (438, "Stale Nonce")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(19),
        _hex("00 01 00 00 21 12 a4 43") + bytes(12),  # wrong magic cookie
        _hex("00 01 00 04 21 12 a4 42") + bytes(12),  # length beyond the data
        _hex("00 01 00 02 21 12 a4 42") + bytes(14),  # length not a multiple of 4
        _hex("c0 01 00 00 21 12 a4 42") + bytes(12),  # top bits set
        _hex("00 01 00 04 21 12 a4 42") + bytes(12) + _hex("00 06 00 08"),  # truncated value
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(T.StunError):
        T.decode(data)


# --- the check, against an in-process fake TURN server --------------------------------


def _xor_address(host: str, port: int) -> bytes:
    raw = socket.inet_aton(host)
    xored = bytes(a ^ b for a, b in zip(raw, struct.pack("!I", T.MAGIC_COOKIE), strict=True))
    return struct.pack("!BBH", 0, 1, port ^ (T.MAGIC_COOKIE >> 16)) + xored


class FakeTurn(asyncio.DatagramProtocol):
    """Enough of coturn's use-auth-secret behaviour to drive the client."""

    def __init__(self, secrets: list[str], stale_once: bool = False, bad_mac: bool = False):
        self.secrets = secrets
        self.stale_once = stale_once
        self.bad_mac = bad_mac
        self.nonce = b"nonce-1"
        self.usernames: list[str] = []
        self.refreshed: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def _reply(
        self, msg: T.Message, cls: int, attrs: list[tuple[int, bytes]], key: bytes | None, addr: Any
    ) -> None:
        self.transport.sendto(T.encode(msg.method, cls, msg.tid, attrs, key=key), addr)

    def _unauthorized(self, msg: T.Message, addr: Any, code: int = 401) -> None:
        reason = b"Unauthorized" if code == 401 else b"Stale Nonce"
        error = struct.pack("!HBB", 0, code // 100, code % 100) + reason
        attrs = [
            (T.ATTR_ERROR_CODE, error),
            (T.ATTR_REALM, b"fake.test"),
            (T.ATTR_NONCE, self.nonce),
        ]
        self._reply(msg, T.ERROR, attrs, None, addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = T.decode(data)
        user = msg.text(T.ATTR_USERNAME)
        if user is None:
            return self._unauthorized(msg, addr)
        self.usernames.append(user)
        if self.stale_once:
            self.stale_once = False
            self.nonce = b"nonce-2"
            return self._unauthorized(msg, addr, 438)
        key = None
        if int(user.split(":")[0]) > time.time() and msg.get(T.ATTR_NONCE) == self.nonce:
            for secret in self.secrets:
                candidate = T.long_term_key(user, "fake.test", T.rest_password(secret, user))
                if msg.check_integrity(candidate):
                    key = candidate
        if key is None:
            return self._unauthorized(msg, addr)
        if msg.method == T.REFRESH:
            self.refreshed.append(msg.get(T.ATTR_LIFETIME) or b"")
            return self._reply(msg, T.SUCCESS, [(T.ATTR_LIFETIME, bytes(4))], key, addr)
        attrs = [
            (T.ATTR_XOR_RELAYED_ADDRESS, _xor_address("127.0.0.1", 50000)),
            (T.ATTR_XOR_MAPPED_ADDRESS, _xor_address(*addr)),
            (T.ATTR_LIFETIME, struct.pack("!I", 600)),
        ]
        self._reply(msg, T.SUCCESS, attrs, b"wrong key" if self.bad_mac else key, addr)


@contextmanager
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger="coview"):
        yield caplog


async def _run_check(fake: FakeTurn, secrets: list[str], **values: Any) -> list[T.CheckResult]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: fake, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        s = settings(turn_urls=[f"turn:127.0.0.1:{port}"], turn_secrets=secrets, **values)
        results = await T.check(s, timeout_s=2.0)
        T.report(results)
        return results
    finally:
        transport.close()


def test_check_allocates_then_frees_the_relay(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTurn([SECRET, OLD_SECRET])
    with captured(caplog):
        [result] = run(_run_check(fake, [SECRET]))
    assert result.ok, result
    assert result.detail == "relayed address 127.0.0.1:50000"
    assert fake.refreshed == [bytes(4)]  # Refresh with LIFETIME 0
    assert "TURN check passed" in caplog.text
    assert caplog.records[-1].levelno == logging.INFO
    _assert_nothing_secret(caplog.text, fake)


def test_check_retries_a_stale_nonce() -> None:
    fake = FakeTurn([SECRET], stale_once=True)
    [result] = run(_run_check(fake, [SECRET]))
    assert result.ok, result


def test_check_warns_on_a_wrong_secret(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTurn([SECRET])
    wrong = "not-the-coturn-secret-123"
    with captured(caplog):
        [result] = run(_run_check(fake, [wrong]))
    assert not result.ok and result.detail.startswith("401 Unauthorized")
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "TURN check failed for turn:127.0.0.1:" in warning.getMessage()
    assert "static-auth-secret" in warning.getMessage()
    assert wrong not in caplog.text
    _assert_nothing_secret(caplog.text, fake)


def test_check_refuses_an_answer_with_a_bad_integrity() -> None:
    [result] = run(_run_check(FakeTurn([SECRET], bad_mac=True), [SECRET]))
    assert not result.ok and "MESSAGE-INTEGRITY" in result.detail


def test_check_times_out_on_a_silent_server() -> None:
    async def scenario() -> T.TurnError:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            url = T.parse_turn_url(f"turn:127.0.0.1:{silent.getsockname()[1]}")
            with pytest.raises(T.TurnError) as failed:
                await T.allocate(url, "u", "p", timeout_s=0.7)
            return failed.value
        finally:
            silent.close()

    assert "no answer within 0.7 s" in str(run(scenario()))


def test_report_logs_success_only_when_it_is_news(caplog: pytest.LogCaptureFixture) -> None:
    ok = T.CheckResult("turn:a", True, "relayed address 1.2.3.4:5", 3.0)
    bad = T.CheckResult("turn:a", False, "no answer within 5 s", 5000.0)
    last: dict[str, bool] = {}
    with captured(caplog):
        for result in (ok, ok, bad, bad, ok):
            T.report([result], last)
    levels = [r.levelno for r in caplog.records]
    assert levels == [
        logging.INFO,
        logging.DEBUG,
        logging.WARNING,
        logging.WARNING,
        logging.INFO,
    ]


def test_checks_start_only_when_turn_is_configured() -> None:
    async def scenario() -> None:
        assert T.start_checks(settings()) is None
        await T.stop_checks(None)
        s = turn_settings(turn_urls=["turn:127.0.0.1:9"], turn_check_interval_s=0)
        task = T.start_checks(s)
        assert task is not None
        await T.stop_checks(task)
        assert task.done()

    run(scenario())


def _assert_nothing_secret(text: str, fake: FakeTurn) -> None:
    assert SECRET not in text and OLD_SECRET not in text
    for user in fake.usernames:
        assert user not in text
        for secret in fake.secrets:
            assert T.rest_password(secret, user) not in text


# --- the app: welcome carries per-connection TURN credentials ---------------------------


def test_welcome_carries_fresh_turn_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the start-up check must warn, not fail
    s = settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        admin_password="a long enough admin password",
        turn_urls=[f"turn:127.0.0.1:{port}"],
        turn_secrets=[SECRET],
        stun_urls=["stun:127.0.0.1:3478"],
        ice_transport_policy="relay",
    )
    welcomes = []
    with captured(caplog), TestClient(create_app(s)) as client:
        for _ in range(2):
            with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
                ws.send_text(P.encode(P.make("handshake", versions=["1"], role="visitor")))
                welcomes.append(P.decode(ws.receive_text(), P.S2C))
                # Leave like a browser and let the server finish with the socket (see
                # test_signaling.connect): TestClient would otherwise cancel the endpoint.
                ws.close(1000)
                while ws.receive()["type"] != "websocket.close":
                    pass
        deadline = time.monotonic() + 10
        while "TURN check failed" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    users = []
    for welcome in welcomes:
        assert welcome["info"]["ice_transport_policy"] == "relay"
        stun, turn = welcome["ice_servers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        assert turn["credential"] == T.rest_password(SECRET, turn["username"])
        users.append(turn["username"])
    assert users[0] != users[1]
    assert f"TURN check failed for turn:127.0.0.1:{port}" in caplog.text
    assert SECRET not in caplog.text
