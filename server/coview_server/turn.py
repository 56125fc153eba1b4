"""TURN: short-lived credentials, the ICE servers each connection gets, and a relay check.

Credentials follow the "TURN REST API" that coturn checks with ``use-auth-secret``:

* username ``"<expiry unix time>:<opaque id>"``: a random id, never a user's name (the
  username travels in clear in every TURN request and lands in coturn's logs);
* password ``base64(HMAC-SHA1(secret, username))``.

coturn recomputes the password from each ``static-auth-secret`` line of its configuration
and accepts the username while its expiry lies in the future.  Coview mints with the first
of its ``turn_secrets``; listing the previous secret second (in Coview, and as a second
``static-auth-secret`` line in coturn) lets secrets rotate without a failed share: see
docs/deploy.md.  coturn checks the expiry when an allocation is made: a TURN allocation made
in time keeps working afterwards, but a page holding credentials older than the TTL can make
no new one.

The secrets never leave the server: browsers get only minted credentials, and nothing here
logs a secret, a password or a username.

The check (like Galène's RelayTest) allocates a relay on every configured ``turn:`` server
at start-up and then periodically, with freshly minted credentials, and warns when that
fails.  Its STUN/TURN client is deliberately minimal: Allocate with the long-term credential
mechanism (RFC 5389 §10.2, RFC 5766 §6), then a Refresh with lifetime 0 to free the relay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets as _secrets
import socket
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("coview.turn")

DEFAULT_TTL_S = 3600.0
DEFAULT_CHECK_INTERVAL_S = 300.0
#: How long one check waits for a TURN server before calling it unreachable.
CHECK_TIMEOUT_S = 5.0
#: Shortest secret accepted: ``openssl rand -hex 32`` gives 64 characters.
MIN_SECRET_LEN = 16

# --- credentials ----------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """A TURN REST credential; the password stays out of ``repr``."""

    username: str
    password: str = field(repr=False)
    expires_at: int


def rest_password(secret: str, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))``, as coturn's ``use-auth-secret`` expects."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def new_opaque_id() -> str:
    """16 random bytes, URL-safe base64: identifies nothing and never contains ``:``."""
    return _secrets.token_urlsafe(16)


def mint(
    secret: str,
    ttl_s: float = DEFAULT_TTL_S,
    now: float | None = None,
    opaque: str | None = None,
) -> Credential:
    """A credential valid for ``ttl_s`` seconds from ``now`` (default: the current time)."""
    if not secret:
        raise ValueError("a TURN secret is required")
    if ttl_s <= 0:
        raise ValueError("the TURN credential lifetime must be positive")
    opaque = new_opaque_id() if opaque is None else opaque
    if ":" in opaque:
        raise ValueError("the opaque part of a TURN username cannot contain ':'")
    expires_at = int((time.time() if now is None else now) + ttl_s)
    username = f"{expires_at}:{opaque}"
    return Credential(username, rest_password(secret, username), expires_at)


def check_secret(secret: str) -> str:
    """Refuse secrets coturn's configuration file could not hold, or too short to be safe."""
    if len(secret) < MIN_SECRET_LEN:
        raise ValueError(
            f"a TURN secret needs at least {MIN_SECRET_LEN} characters "
            "(generate one with: openssl rand -hex 32)"
        )
    if not all(33 <= ord(c) < 127 for c in secret) or any(c in "#\"'\\" for c in secret):
        raise ValueError(
            "a TURN secret must be printable ASCII without spaces, quotes, '#' or '\\' "
            "(generate one with: openssl rand -hex 32)"
        )
    return secret


# --- URLs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnUrl:
    """A parsed ``turn:``/``turns:`` URL (RFC 7065)."""

    text: str
    secure: bool
    host: str
    port: int
    transport: str  # "udp" or "tcp"


def parse_turn_url(url: str) -> TurnUrl:
    scheme, colon, rest = url.strip().partition(":")
    if scheme not in ("turn", "turns") or not colon or rest.startswith("//"):
        raise ValueError(f"not a TURN URL (turn:host[:port][?transport=udp|tcp]): {url!r}")
    secure = scheme == "turns"
    hostport, _, query = rest.partition("?")
    transport = "tcp" if secure else "udp"
    if query:
        key, _, value = query.partition("=")
        if key != "transport" or value not in ("udp", "tcp"):
            raise ValueError(f"TURN URL query must be ?transport=udp or ?transport=tcp: {url!r}")
        transport = value
    if secure and transport == "udp":
        raise ValueError(f"browsers do not support TURN over DTLS: {url!r}")
    host, port = _split_hostport(hostport, 5349 if secure else 3478, url)
    return TurnUrl(url.strip(), secure, host, port, transport)


def check_stun_url(url: str) -> str:
    scheme, colon, rest = url.strip().partition(":")
    if scheme not in ("stun", "stuns") or not colon or "?" in rest:
        raise ValueError(f"not a STUN URL (stun:host[:port]): {url!r}")
    _split_hostport(rest, 3478, url)
    return url.strip()


def _split_hostport(text: str, default_port: int, url: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"unclosed IPv6 address in {url!r}")
    else:
        host, tail = text, ""
        if text.count(":") == 1:
            host, tail = text.split(":")
            tail = ":" + tail
    port = default_port
    if tail:
        if not tail.startswith(":") or not tail[1:].isdigit():
            raise ValueError(f"bad port in {url!r}")
        port = int(tail[1:])
    if not host or not 0 < port < 65536 or any(c in host for c in "/@ "):
        raise ValueError(f"bad host or port in {url!r}")
    return host, port


# --- the ICE servers a browser gets ---------------------------------------------------


def ice_servers(settings: Settings, now: float | None = None) -> list[dict[str, Any]]:
    """``RTCPeerConnection`` ``iceServers`` for one connection.

    The static ``ice_servers`` entries come first, as configured; then one entry with the
    STUN URLs; then one entry with every TURN URL and a credential minted for this
    connection alone.
    """
    servers: list[dict[str, Any]] = [dict(entry) for entry in settings.ice_servers]
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls and settings.turn_secrets:
        cred = mint(settings.turn_secrets[0], settings.turn_ttl_s, now)
        servers.append(
            {
                "urls": list(settings.turn_urls),
                "username": cred.username,
                "credential": cred.password,
            }
        )
    return servers


def ice_servers_for(settings: Settings) -> Callable[[object], list[dict[str, Any]]]:
    """The :class:`~coview_server.hub.Hub` seam: fresh credentials for every connection."""

    def per_connection(conn: object) -> list[dict[str, Any]]:
        return ice_servers(settings)

    return per_connection


# --- STUN messages (RFC 5389) and TURN attributes (RFC 5766) ---------------------------

MAGIC_COOKIE = 0x2112A442
FINGERPRINT_XOR = 0x5354554E

BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004

REQUEST = 0
INDICATION = 1
SUCCESS = 2
ERROR = 3

ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_LIFETIME = 0x000D
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_XOR_RELAYED_ADDRESS = 0x0016
ATTR_REQUESTED_TRANSPORT = 0x0019
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028

PROTO_UDP = 17


class StunError(Exception):
    """A malformed STUN message."""


def message_type(method: int, cls: int) -> int:
    """Interleave the 12 method bits and 2 class bits (RFC 5389 §6)."""
    return (
        ((method & 0x0F80) << 2)
        | ((method & 0x0070) << 1)
        | (method & 0x000F)
        | ((cls & 2) << 7)
        | ((cls & 1) << 4)
    )


def split_type(mtype: int) -> tuple[int, int]:
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    cls = ((mtype & 0x0100) >> 7) | ((mtype & 0x0010) >> 4)
    return method, cls


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _header(mtype: int, length: int, tid: bytes) -> bytes:
    return struct.pack("!HHI", mtype, length, MAGIC_COOKIE) + tid


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """``MD5(username ":" realm ":" password)`` (RFC 5389 §15.4; our passwords are ASCII)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def encode(
    method: int,
    cls: int,
    tid: bytes,
    attributes: Sequence[tuple[int, bytes]] = (),
    key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A STUN message; with ``key``, MESSAGE-INTEGRITY; then FINGERPRINT if asked."""
    if len(tid) != 12:
        raise ValueError("a STUN transaction id has 12 bytes")
    mtype = message_type(method, cls)
    body = b"".join(_attr(kind, value) for kind, value in attributes)
    if key is not None:
        # The HMAC covers the header with a length that already counts MESSAGE-INTEGRITY.
        mac = hmac.new(key, _header(mtype, len(body) + 24, tid) + body, hashlib.sha1).digest()
        body += _attr(ATTR_MESSAGE_INTEGRITY, mac)
    if fingerprint:
        crc = zlib.crc32(_header(mtype, len(body) + 8, tid) + body) ^ FINGERPRINT_XOR
        body += _attr(ATTR_FINGERPRINT, struct.pack("!I", crc & 0xFFFFFFFF))
    return _header(mtype, len(body), tid) + body


@dataclass
class Message:
    method: int
    cls: int
    tid: bytes
    attributes: list[tuple[int, bytes]]
    raw: bytes = field(repr=False)
    #: Offsets in ``raw`` of the MESSAGE-INTEGRITY and FINGERPRINT attributes, if present.
    integrity_at: int | None = None
    fingerprint_at: int | None = None

    def get(self, kind: int) -> bytes | None:
        for k, value in self.attributes:
            if k == kind:
                return value
        return None

    def text(self, kind: int) -> str | None:
        value = self.get(kind)
        return None if value is None else value.decode("utf-8", "replace")

    def error(self) -> tuple[int, str] | None:
        """``(code, reason)`` of an ERROR-CODE attribute."""
        value = self.get(ATTR_ERROR_CODE)
        if value is None or len(value) < 4:
            return None
        return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")

    def address(self, kind: int) -> tuple[str, int] | None:
        """An XOR-MAPPED-ADDRESS style attribute, decoded."""
        value = self.get(kind)
        if value is None or len(value) < 8:
            return None
        family = value[1]
        port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
        mask = struct.pack("!I", MAGIC_COOKIE)
        if family == 0x01:
            raw = bytes(a ^ b for a, b in zip(value[4:8], mask, strict=True))
            return str(ipaddress.IPv4Address(raw)), port
        if family == 0x02 and len(value) >= 20:
            raw = bytes(a ^ b for a, b in zip(value[4:20], mask + self.tid, strict=True))
            return str(ipaddress.IPv6Address(raw)), port
        return None

    def check_integrity(self, key: bytes) -> bool:
        if self.integrity_at is None:
            return False
        at = self.integrity_at
        header = self.raw[:2] + struct.pack("!H", at - 20 + 24) + self.raw[4:20]
        mac = hmac.new(key, header + self.raw[20:at], hashlib.sha1).digest()
        return hmac.compare_digest(mac, self.raw[at + 4 : at + 24])

    def check_fingerprint(self) -> bool:
        if self.fingerprint_at is None:
            return False
        at = self.fingerprint_at
        header = self.raw[:2] + struct.pack("!H", at - 20 + 8) + self.raw[4:20]
        crc = (zlib.crc32(header + self.raw[20:at]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        return struct.pack("!I", crc) == self.raw[at + 4 : at + 8]


def decode(data: bytes) -> Message:
    if len(data) < 20:
        raise StunError("shorter than a STUN header")
    mtype, length, cookie = struct.unpack("!HHI", data[:8])
    if mtype & 0xC000 or cookie != MAGIC_COOKIE:
        raise StunError("not a STUN message")
    if length % 4 or length != len(data) - 20:
        raise StunError("bad STUN message length")
    method, cls = split_type(mtype)
    msg = Message(method, cls, data[8:20], [], data)
    pos = 20
    while pos < len(data):
        if pos + 4 > len(data):
            raise StunError("truncated STUN attribute")
        kind, size = struct.unpack("!HH", data[pos : pos + 4])
        end = pos + 4 + size
        if end > len(data):
            raise StunError("truncated STUN attribute")
        if msg.fingerprint_at is not None:
            raise StunError("attribute after FINGERPRINT")
        if kind == ATTR_FINGERPRINT:
            if size != 4:
                raise StunError("bad FINGERPRINT")
            msg.fingerprint_at = pos
        elif msg.integrity_at is not None:
            pass  # RFC 5389 §15.4: only FINGERPRINT may follow MESSAGE-INTEGRITY
        elif kind == ATTR_MESSAGE_INTEGRITY:
            if size != 20:
                raise StunError("bad MESSAGE-INTEGRITY")
            msg.integrity_at = pos
        msg.attributes.append((kind, data[pos + 4 : end]))
        pos = end + (-size % 4)
    return msg


# --- a minimal TURN client ------------------------------------------------------------


class TurnError(Exception):
    """The allocation failed; ``str()`` says why, without any secret."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.code = code


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" on our connected socket: nothing listens there.
        if isinstance(exc, OSError):
            self.inbox.put_nowait(exc)


class _Channel:
    """One 5-tuple to a TURN server: send a request, get the matching response."""

    def __init__(self, url: TurnUrl, addr: tuple[Any, ...], family: int) -> None:
        self.url = url
        self.addr = addr
        self.family = family
        self._udp: _Udp | None = None
        self._datagrams: asyncio.DatagramTransport | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        if self.url.transport == "udp":
            self._datagrams, self._udp = await loop.create_datagram_endpoint(
                _Udp, remote_addr=self.addr[:2], family=self.family
            )
        else:
            self._reader, self._writer = await asyncio.open_connection(
                self.addr[0], self.addr[1], family=self.family
            )

    async def close(self) -> None:
        if self._datagrams is not None:
            self._datagrams.close()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def request(self, data: bytes, tid: bytes, deadline: float) -> Message:
        loop = asyncio.get_running_loop()
        if self._udp is not None and self._datagrams is not None:
            rto = 0.5  # RFC 5389 §7.2.1: retransmit, doubling the timeout
            while True:
                self._datagrams.sendto(data)
                wait_until = min(loop.time() + rto, deadline)
                while (left := wait_until - loop.time()) > 0:
                    try:
                        raw = await asyncio.wait_for(self._udp.inbox.get(), left)
                    except TimeoutError:
                        break
                    if isinstance(raw, OSError):
                        raise raw
                    msg = _maybe_response(raw, tid)
                    if msg is not None:
                        return msg
                if loop.time() >= deadline:
                    raise TimeoutError
                rto *= 2
        assert self._reader is not None and self._writer is not None
        self._writer.write(data)
        await self._writer.drain()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            head = await asyncio.wait_for(self._reader.readexactly(20), left)
            (length,) = struct.unpack("!H", head[2:4])
            body = await asyncio.wait_for(self._reader.readexactly(length), left)
            msg = _maybe_response(head + body, tid)
            if msg is not None:
                return msg


def _maybe_response(raw: bytes, tid: bytes) -> Message | None:
    try:
        msg = decode(raw)
    except StunError:
        return None
    if msg.tid != tid or msg.cls not in (SUCCESS, ERROR):
        return None
    if msg.fingerprint_at is not None and not msg.check_fingerprint():
        return None
    return msg


@dataclass(frozen=True)
class Allocation:
    relayed: tuple[str, int]
    mapped: tuple[str, int] | None
    lifetime_s: int | None


async def allocate(
    url: TurnUrl,
    username: str,
    password: str,
    timeout_s: float = CHECK_TIMEOUT_S,
    release: bool = True,
) -> Allocation:
    """Allocate a UDP relay on ``url`` (then free it unless ``release`` is false).

    Raises :class:`TurnError` with an operator-readable reason.
    """
    if url.secure:
        raise TurnError("turns: (TLS) URLs are not checked")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    kind = socket.SOCK_DGRAM if url.transport == "udp" else socket.SOCK_STREAM
    try:
        infos = await loop.getaddrinfo(url.host, url.port, type=kind)
    except OSError as exc:
        raise TurnError(f"cannot resolve {url.host}: {exc.strerror or exc}") from None
    if not infos:
        raise TurnError(f"cannot resolve {url.host}")
    family, _, _, _, addr = infos[0]
    channel = _Channel(url, addr, family)
    try:
        try:
            await asyncio.wait_for(channel.open(), max(deadline - loop.time(), 0.01))
        except ConnectionRefusedError:
            raise TurnError(f"nothing listens on TCP port {url.port}") from None
        except (OSError, TimeoutError) as exc:
            raise TurnError(f"cannot connect over {url.transport.upper()}: {exc}") from None
        return await _allocate(channel, username, password, deadline, release)
    except TimeoutError:
        raise TurnError(f"no answer within {timeout_s:g} s") from None
    except ConnectionRefusedError:
        raise TurnError(f"nothing listens on {url.transport.upper()} port {url.port}") from None
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise TurnError(f"connection failed: {exc}") from None
    finally:
        await channel.close()


_TRANSPORT_UDP = bytes([PROTO_UDP, 0, 0, 0])


async def _allocate(
    channel: _Channel, username: str, password: str, deadline: float, release: bool
) -> Allocation:
    tid = os.urandom(12)
    first = [(ATTR_REQUESTED_TRANSPORT, _TRANSPORT_UDP)]
    resp = await channel.request(encode(ALLOCATE, REQUEST, tid, first), tid, deadline)
    if resp.cls == SUCCESS:
        raise TurnError("the server allocated a relay without asking for credentials")
    error = resp.error()
    realm, nonce = resp.text(ATTR_REALM), resp.get(ATTR_NONCE)
    if error is None or error[0] != 401 or realm is None or nonce is None:
        raise _refusal(error)
    for _ in range(3):
        key = long_term_key(username, realm, password)
        auth = [
            (ATTR_USERNAME, username.encode()),
            (ATTR_REALM, realm.encode()),
            (ATTR_NONCE, nonce),
        ]
        tid = os.urandom(12)
        data = encode(ALLOCATE, REQUEST, tid, [*first, *auth], key=key)
        resp = await channel.request(data, tid, deadline)
        if resp.cls == SUCCESS:
            if not resp.check_integrity(key):
                raise TurnError("the server's answer failed the MESSAGE-INTEGRITY check")
            relayed = resp.address(ATTR_XOR_RELAYED_ADDRESS)
            if relayed is None:
                raise TurnError("the server's answer has no relayed address")
            lifetime = resp.get(ATTR_LIFETIME)
            allocation = Allocation(
                relayed,
                resp.address(ATTR_XOR_MAPPED_ADDRESS),
                struct.unpack("!I", lifetime)[0] if lifetime and len(lifetime) == 4 else None,
            )
            if release:
                # Free the relay at once: a check must not hold quota for ten minutes.
                tid = os.urandom(12)
                bye = encode(REFRESH, REQUEST, tid, [(ATTR_LIFETIME, bytes(4)), *auth], key=key)
                with contextlib.suppress(TimeoutError, OSError, asyncio.IncompleteReadError):
                    await channel.request(bye, tid, deadline)
            return allocation
        error = resp.error()
        if error is not None and error[0] == 438 and resp.get(ATTR_NONCE) is not None:
            nonce = resp.get(ATTR_NONCE) or nonce  # stale nonce: retry with the new one
            realm = resp.text(ATTR_REALM) or realm
            continue
        raise _refusal(error)
    raise TurnError("the server kept answering 438 Stale Nonce", 438)


def _refusal(error: tuple[int, str] | None) -> TurnError:
    if error is None:
        return TurnError("unexpected answer (no ERROR-CODE)")
    code, reason = error
    text = f"{code} {reason}".strip()
    if code == 401:
        text += (
            ": the server rejected Coview's credentials. Check that its configuration has "
            "use-auth-secret and a static-auth-secret equal to the first of Coview's "
            "turn_secrets (coview turn-config prints one), and that both clocks are right"
        )
    elif code == 486:
        text += ": the server's allocation quota is reached (user-quota / total-quota)"
    elif code == 508:
        text += ": the server has no relay port left (min-port / max-port)"
    return TurnError(text, code)


# --- the check ------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    url: str
    ok: bool
    #: The relayed address on success, else why it failed (never a secret).
    detail: str
    elapsed_ms: float


def checkable_urls(settings: Settings) -> list[TurnUrl]:
    """The distinct ``turn:`` servers (UDP and TCP; ``turns:`` is not checked)."""
    seen: set[tuple[str, int, str]] = set()
    out: list[TurnUrl] = []
    for text in settings.turn_urls:
        url = parse_turn_url(text)
        key = (url.host, url.port, url.transport)
        if not url.secure and key not in seen:
            seen.add(key)
            out.append(url)
    return out


async def check(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> list[CheckResult]:
    """Allocate (and free) a relay on each TURN server with freshly minted credentials."""
    if not settings.turn_urls or not settings.turn_secrets:
        return []

    async def one(url: TurnUrl) -> CheckResult:
        cred = mint(settings.turn_secrets[0], settings.turn_ttl_s)
        started = time.perf_counter()
        try:
            allocation = await allocate(url, cred.username, cred.password, timeout_s)
        except TurnError as exc:
            detail, ok = str(exc), False
        else:
            host, port = allocation.relayed
            detail, ok = f"relayed address {_hostport(host, port)}", True
        return CheckResult(url.text, ok, detail, (time.perf_counter() - started) * 1000)

    return list(await asyncio.gather(*(one(url) for url in checkable_urls(settings))))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def report(results: Sequence[CheckResult], last: dict[str, bool] | None = None) -> None:
    """Log check results: every failure as a warning, a success when it is news."""
    for result in results:
        was_ok = None if last is None else last.get(result.url)
        if result.ok:
            level = logging.INFO if was_ok is not True else logging.DEBUG
            log.log(
                level,
                "TURN check passed for %s: %s in %.0f ms",
                result.url,
                result.detail,
                result.elapsed_ms,
            )
        else:
            log.warning(
                "TURN check failed for %s: %s. Visitors and agents on restrictive networks "
                "cannot share screens through it.",
                result.url,
                result.detail,
            )
        if last is not None:
            last[result.url] = result.ok


async def run_checks(settings: Settings) -> None:
    """Check at once, then every ``turn_check_interval_s`` (0: only at start-up)."""
    last: dict[str, bool] = {}
    if not checkable_urls(settings):
        log.info("TURN check skipped: only turns: URLs are configured, and TLS is not checked")
        return
    while True:
        try:
            report(await check(settings), last)
        except Exception:  # a check must never take the server down
            log.exception("TURN check crashed")
        if settings.turn_check_interval_s <= 0:
            return
        await asyncio.sleep(settings.turn_check_interval_s)


def start_checks(settings: Settings) -> asyncio.Task[None] | None:
    """Start the background check when TURN is configured (call inside the event loop)."""
    if not settings.turn_urls or not settings.turn_secrets:
        return None
    return asyncio.create_task(run_checks(settings), name="coview-turn-check")


async def stop_checks(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- coturn configuration ---------------------------------------------------------------

#: Peer addresses a public TURN server must never relay to (RFC 1918, loopback,
#: link-local, CGNAT, "this network", multicast/reserved, and their IPv6 counterparts).
DENIED_PEER_RANGES = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "224.0.0.0-255.255.255.255",
    "::-::1",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)


def coturn_config(settings: Settings, realm: str | None = None) -> str:
    """A ``turnserver.conf`` matching ``settings`` (it contains the secrets)."""
    if not settings.turn_urls or not settings.turn_secrets:
        raise ValueError(
            "set turn_urls and turn_secrets first (e.g. COVIEW_TURN_URLS and "
            "COVIEW_TURN_SECRETS; generate a secret with: openssl rand -hex 32)"
        )
    urls = [parse_turn_url(u) for u in settings.turn_urls]
    plain = [u for u in urls if not u.secure]
    tls = [u for u in urls if u.secure]
    port = plain[0].port if plain else 3478
    tls_port = tls[0].port if tls else 443
    realm = realm or urls[0].host
    cert_name = tls[0].host if tls else realm
    lines = [
        "# coturn configuration for Coview, printed by `coview turn-config`.",
        "# It holds the TURN secrets: install it readable by root and coturn only,",
        "# e.g. /etc/turnserver.conf, mode 0640, owner root:turnserver. See docs/deploy.md.",
        "#",
        "# Coview's TURN URLs: " + ", ".join(settings.turn_urls),
        f"# Coview mints credentials valid for {settings.turn_ttl_s:g} s with the first secret.",
        "",
        "# Where coturn listens (UDP and TCP). Uncomment listening-ip to bind one address,",
        "# and set external-ip when coturn runs behind 1:1 NAT (public/private).",
        f"listening-port={port}",
        "#listening-ip=203.0.113.10",
        "#relay-ip=203.0.113.10",
        "#external-ip=203.0.113.10/10.0.0.10",
        "min-port=49152",
        "max-port=65535",
        "",
        "# TURN over TLS, for networks that only let HTTPS out: a certificate for",
        f"# {cert_name}, copied where coturn (user turnserver) can read it by the",
        f"# renewal hook of docs/deploy.md; uncomment, and open TCP {tls_port} in the firewall.",
        f"#tls-listening-port={tls_port}",
        "#cert=/etc/coturn/certs/fullchain.pem",
        "#pkey=/etc/coturn/certs/privkey.pem",
        "#no-tlsv1",
        "#no-tlsv1_1",
        "no-dtls",
        "",
        "# Credentials: Coview's TURN REST credentials (use-auth-secret). coturn accepts a",
        "# credential made with any listed secret: keep the previous one listed while",
        "# rotating.",
        f"realm={realm}",
        "use-auth-secret",
        *(f"static-auth-secret={secret}" for secret in settings.turn_secrets),
        "",
        "# Hardening.",
        "fingerprint",
        "no-cli",
        "no-multicast-peers",
        "no-tcp-relay",
        "no-rfc5780",
        "no-stun-backward-compatibility",
        "response-origin-only-with-rfc5780",
        "# Never relay to private, loopback or link-local addresses. If coturn's own relay",
        "# address is private (behind NAT), allow exactly that address:",
        "#allowed-peer-ip=10.0.0.10",
        *(f"denied-peer-ip={r}" for r in DENIED_PEER_RANGES),
        "",
        "# Quotas: each Coview connection gets its own username; a browser makes about one",
        "# allocation per TURN URL and peer connection.",
        "user-quota=24",
        "total-quota=1200",
        "stale-nonce=600",
        "",
        "# Logs: to syslog, one line per event. Usernames are Coview's random ids.",
        "syslog",
        "simple-log",
        "",
    ]
    return "\n".join(lines)
