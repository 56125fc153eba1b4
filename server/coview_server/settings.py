"""Server settings: defaults, then a TOML file, then ``COVIEW_*`` environment variables.

Everything a deployment may change lives here so the rest of the server never reads the
environment.  The defaults run Coview embedded: SQLite in ``./var``, in-process broker,
loopback only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .keys import DEFAULT_DIGITS, MAX_DIGITS, MIN_DIGITS
from .turn import (
    DEFAULT_CHECK_INTERVAL_S,
    DEFAULT_TTL_S,
    check_secret,
    check_stun_url,
    parse_turn_url,
)

REDIS_SCHEMES = ("redis", "rediss", "unix")
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent.parent


def _default_web_root() -> Path:
    return REPO_DIR / "web"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: Any SQLAlchemy URL: SQLite (the default: one process) or PostgreSQL for several
    #: processes (``postgresql://user:password@host/coview``; the asyncpg driver is implied).
    database_url: str = "sqlite+aiosqlite:///var/coview.db"
    #: Redis for several processes of one deployment (``redis://host:6379/0``,
    #: ``rediss://`` for TLS, ``unix:///run/redis/redis.sock``); empty: in-process only.
    #: See ``coview_server.broker`` and docs/deploy.md.
    redis_url: str = field(default="", repr=False)
    #: Starts every Redis channel and key, so deployments can share one Redis.
    redis_prefix: str = "coview:"
    #: Origins allowed to open the WebSocket besides the server's own.
    allowed_origins: tuple[str, ...] = ()
    #: Sites allowed to embed the chat widget (``/widget``) in a frame, e.g.
    #: ``https://shop.example``; the server's own pages always may.
    embed_origins: tuple[str, ...] = ()
    #: Static ``RTCPeerConnection`` ``iceServers`` entries, sent as they are (JSON in the
    #: environment).  STUN and TURN are better set with the settings below.
    ice_servers: tuple[dict[str, Any], ...] = ()
    #: ``stun:host[:port]`` URLs given to browsers.
    stun_urls: tuple[str, ...] = ()
    #: ``turn:host[:port][?transport=tcp]`` and ``turns:host:443`` URLs of a coturn set up
    #: with ``use-auth-secret`` (``coview turn-config`` prints its configuration).  Every
    #: connection gets its own short-lived credential for them (see ``coview_server.turn``).
    turn_urls: tuple[str, ...] = ()
    #: coturn's ``static-auth-secret`` values, current first: Coview mints with the first;
    #: list the previous one second while rotating (docs/deploy.md).  Never sent or logged.
    turn_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Lifetime of a TURN credential: a page can make new relays for this long.
    turn_ttl_s: float = DEFAULT_TTL_S
    #: Seconds between checks that the TURN servers allocate a relay (0: start-up only).
    turn_check_interval_s: float = DEFAULT_CHECK_INTERVAL_S
    #: ``"all"``, or ``"relay"`` to make browsers use TURN only (tests, strict networks).
    ice_transport_policy: str = "all"
    #: The server's media relay (an aiortc peer): ``"auto"`` carries a share when the direct
    #: path fails, ``"always"`` carries every share (audit, recording), ``"off"`` never.
    media_relay: str = "auto"
    #: Seconds the viewer has, from the first offer, to report ICE connected before the
    #: share falls back to the relay.
    relay_fallback_s: float = 8.0
    #: Addresses the relay offers as its host candidates (empty: every address the machine
    #: has, but loopback).  Set the public address here on a server behind 1:1 NAT.
    relay_addresses: tuple[str, ...] = ()
    #: Forward the sharer's encoded video as it is; ``false`` decodes and re-encodes.
    relay_forward: bool = True
    admin_email: str = "admin@coview.local"
    admin_password: str | None = None
    web_root: Path = field(default_factory=_default_web_root)
    #: Cookies get ``Secure`` when Coview is served over HTTPS.
    secure_cookies: bool = False
    session_ttl_s: float = 12 * 3600
    share_request_timeout_s: float = 120.0
    share_open_timeout_s: float = 60.0
    share_pick_timeout_s: float = 300.0
    #: Seconds a share waits for a party whose connection dropped (the share window, or
    #: the agent's console: a reload) before it ends; also how long shares stay resumable
    #: after a server restart (docs/protocol.md, Reconnect and resume).
    resume_grace_s: float = 20.0
    #: Digits of the key an agent reads to a phone caller (``coview_server.keys``).
    share_key_digits: int = DEFAULT_DIGITS
    #: Seconds a phone share key stays valid; the share waits for the caller this long.
    share_key_ttl_s: float = 300.0
    #: Keys one client address may try at ``/share`` in 10 minutes (any key, right or wrong).
    share_key_address_limit: int = 10
    #: Messages per second a socket may send on average, and the burst it may save up.
    ws_rate: float = 50.0
    ws_burst: float = 200.0
    #: WebSockets one client address may hold open at once, and open per second on
    #: average with bursts (``coview_server.limits.AddressGate``).
    ws_address_max: int = 200
    ws_address_rate: float = 2.0
    ws_address_burst: float = 100.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.turn_urls and not self.turn_secrets:
            raise ValueError("turn_urls needs turn_secrets (coturn's static-auth-secret)")
        if self.turn_ttl_s <= 0:
            raise ValueError("turn_ttl_s must be positive")
        if self.turn_check_interval_s < 0:
            raise ValueError("turn_check_interval_s cannot be negative")
        if self.ice_transport_policy not in ("all", "relay"):
            raise ValueError("ice_transport_policy must be 'all' or 'relay'")
        if self.media_relay not in ("auto", "always", "off"):
            raise ValueError("media_relay must be 'auto', 'always' or 'off'")
        if not 0 < self.resume_grace_s <= 600:
            raise ValueError("resume_grace_s must be more than 0 and at most 600 seconds")
        if self.relay_fallback_s <= 0:
            raise ValueError("relay_fallback_s must be positive")
        if not MIN_DIGITS <= self.share_key_digits <= MAX_DIGITS:
            raise ValueError(f"share_key_digits must be from {MIN_DIGITS} to {MAX_DIGITS}")
        if not 0 < self.share_key_ttl_s <= 3600:
            raise ValueError("share_key_ttl_s must be more than 0 and at most 3600 seconds")
        if self.share_key_address_limit < 1:
            raise ValueError("share_key_address_limit must be at least 1")
        if self.ws_address_max < 1 or self.ws_address_rate <= 0 or self.ws_address_burst < 1:
            raise ValueError("ws_address_max, ws_address_burst >= 1 and ws_address_rate > 0")
        if self.redis_url and self.redis_url.partition("://")[0] not in REDIS_SCHEMES:
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")

    @property
    def multi_instance(self) -> bool:
        """Several processes serve this deployment (Redis broker, shared PostgreSQL)."""
        return bool(self.redis_url)

    @property
    def vendor_root(self) -> Path:
        return self.web_root / "vendor"

    @classmethod
    def load(
        cls,
        config_path: str | None = None,
        overrides: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Settings:
        values: dict[str, Any] = {}
        if config_path:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
            values.update(data.get("coview", data))
        env = os.environ if environ is None else environ
        for f in fields(cls):
            raw = env.get("COVIEW_" + f.name.upper())
            if raw is not None:
                values[f.name] = raw
        for key, value in (overrides or {}).items():
            if value is not None:
                values[key] = value
        return cls()._with(values)

    def _with(self, values: dict[str, Any]) -> Settings:
        known = {f.name: f for f in fields(self)}
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}")
            current = getattr(self, key)
            converted[key] = _convert(key, value, current)
        return replace(self, **converted)


def _convert(key: str, value: Any, current: Any) -> Any:
    """Coerce TOML or environment text to the type of the default."""
    if key == "web_root":
        return Path(value)
    if key == "ice_servers":
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
            raise ValueError("ice_servers must be a list of objects")
        return tuple(value)
    if key in (
        "allowed_origins",
        "embed_origins",
        "stun_urls",
        "turn_urls",
        "turn_secrets",
        "relay_addresses",
    ):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} must be a list of strings")
        if key == "stun_urls":
            value = [check_stun_url(v) for v in value]
        elif key == "turn_urls":
            value = [parse_turn_url(v).text for v in value]
        elif key == "turn_secrets":
            value = [check_secret(v) for v in value]
        elif key == "relay_addresses":
            value = [str(ipaddress.ip_address(v)) for v in value]
        return tuple(value)
    if isinstance(current, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    return value
