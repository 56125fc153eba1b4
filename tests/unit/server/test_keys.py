"""Phone share keys: generation, matching, expiry, single use, lockout and rate limiting.

The pure rules (``coview_server.keys``, ``security.AddressLimiter``) are tested directly;
the hub's phone shares with the same ``World`` as the hub tests: ``Conn`` objects, a real
SQLite store and a fake clock.
"""

from __future__ import annotations

import re
import types
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from test_hub import FakeClock, World, drain, last_state, of, states

from coview import protocol as P, share as S
from coview_server import keys, signaling, store as store_module, tokens
from coview_server.hub import Conn, Hub
from coview_server.keys import MAX_WRONG, KeyRing, PendingKey
from coview_server.passwords import hash_password
from coview_server.security import AddressLimiter
from coview_server.settings import Settings
from coview_server.store import Store

# --- key generation --------------------------------------------------------------------


def test_keys_are_digits_of_the_configured_length() -> None:
    for digits in (6, 8, 12):
        ring = KeyRing(digits)
        for _ in range(200):
            key = ring.mint()
            assert len(key) == digits and re.fullmatch(r"[0-9]+", key)


def test_key_length_is_bounded() -> None:
    for digits in (0, 4, 5, 13):
        with pytest.raises(ValueError):
            KeyRing(digits)


def test_keys_come_from_secrets_randbelow(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def randbelow(n: int) -> int:
        asked.append(n)
        return 42

    monkeypatch.setattr(tokens.secrets, "randbelow", randbelow)
    assert KeyRing(6).mint() == "000042"  # leading zeros kept: always six digits
    assert asked == [10**6]  # one draw over the whole range: every key equally likely


def test_key_digits_are_evenly_spread() -> None:
    ring = KeyRing(6)
    counts = Counter("".join(ring.mint() for _ in range(6000)))
    # 36 000 digits: 3600 expected per digit, σ ≈ 57; 10 % is more than 6 σ.
    assert set(counts) == set("0123456789")
    assert all(abs(n - 3600) < 360 for n in counts.values()), counts


def test_only_an_hmac_under_a_process_secret_is_derived() -> None:
    ring = KeyRing(6, secret=b"s" * 32)
    digest = ring.digest("123456")
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and "123456" not in digest
    assert digest == ring.digest("123456")
    assert digest != ring.digest("123457")
    assert digest != tokens.token_hash("123456"), "not a plain hash a copy could brute-force"
    assert KeyRing(6, secret=b"t" * 32).digest("123456") != digest
    assert KeyRing(6).digest("123456") != KeyRing(6).digest("123456"), "a secret per process"
    assert ring.proof("123456") != digest, "the spent proof is not the stored digest"


def test_same_compares_digests_in_constant_time_and_never_raises() -> None:
    assert KeyRing.same("ab" * 32, "ab" * 32)
    assert not KeyRing.same("ab" * 32, "ac" * 32)
    assert not KeyRing.same("ab", "ab" * 32)
    assert not KeyRing.same("é", "e")  # a forged cookie with non-ASCII does not crash


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("123456", "123456"),
        ("123 456", "123456"),
        (" 123-456 ", "123456"),
        ("000000", "000000"),
        ("12345", None),
        ("1234567", None),
        ("12345a", None),
        ("١٢٣٤٥٦", None),  # Arabic-Indic digits pass str.isdigit, not our check
        ("", None),
        ("1" * 65, None),
    ],
)
def test_normalize(typed: str, key: str | None) -> None:
    assert keys.normalize(typed, 6) == key


def test_durations_are_for_people() -> None:
    assert keys.duration(300) == "5 minutes"
    assert keys.duration(60) == "1 minute"
    assert keys.duration(2) == "2 seconds"
    assert keys.duration(90) == "90 seconds"


# --- one key's life ----------------------------------------------------------------------


def test_a_pending_key_expires() -> None:
    pending = PendingKey("d", expires_at=100.0)
    assert pending.usable(99.9)
    assert not pending.usable(100.0)


def test_a_key_locks_on_the_fifth_wrong_attempt() -> None:
    pending = PendingKey("d", expires_at=100.0)
    assert [pending.count_wrong() for _ in range(MAX_WRONG - 1)] == [False] * (MAX_WRONG - 1)
    assert pending.usable(0)
    assert pending.count_wrong() is True
    assert not pending.usable(0) and pending.locked
    assert pending.count_wrong() is False  # locked once, reported once


def test_match_finds_only_a_usable_key() -> None:
    ring = KeyRing(6)
    a = PendingKey(ring.digest("111111"), 100.0)
    b = PendingKey(ring.digest("222222"), 100.0)
    waiting = [("a", a), ("b", b)]
    assert keys.match(ring, "222222", waiting, 0) == "b"
    assert keys.match(ring, "333333", waiting, 0) is None
    assert keys.match(ring, "222222", waiting, 100.0) is None  # expired
    b.used = True
    assert keys.match(ring, "222222", waiting, 0) is None
    a.locked = True
    assert keys.match(ring, "111111", waiting, 0) is None


# --- rate limiting per address ---------------------------------------------------------


def test_address_limiter_counts_per_address_in_a_sliding_window() -> None:
    limiter = AddressLimiter(window_s=600, limit=3)
    assert [limiter.allow("10.0.0.1", t) for t in (0, 1, 2)] == [True] * 3
    assert not limiter.allow("10.0.0.1", 3)
    assert limiter.allow("10.0.0.2", 3), "another address has its own budget"
    assert not limiter.allow("10.0.0.1", 600), "refused attempts do not extend the window"
    assert limiter.allow("10.0.0.1", 600.5)  # the first attempt left the window


def test_address_limiter_bounds_its_memory() -> None:
    limiter = AddressLimiter(window_s=600, limit=1)
    for i in range(AddressLimiter.MAX_ADDRESSES + 2):
        limiter.allow(f"a{i}", 0)
    assert len(limiter.attempts) <= AddressLimiter.MAX_ADDRESSES


def test_address_limiter_needs_sane_numbers() -> None:
    for window, limit in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            AddressLimiter(window, limit)


# --- settings --------------------------------------------------------------------------


def test_key_settings_have_defaults_and_are_validated() -> None:
    settings = Settings.load(environ={})
    assert settings.share_key_digits == 6
    assert settings.share_key_ttl_s == 300.0
    assert settings.share_key_address_limit == 10
    loaded = Settings.load(environ={"COVIEW_SHARE_KEY_DIGITS": "8", "COVIEW_SHARE_KEY_TTL_S": "2"})
    assert (loaded.share_key_digits, loaded.share_key_ttl_s) == (8, 2.0)
    for name, value, words in (
        ("COVIEW_SHARE_KEY_DIGITS", "5", "share_key_digits"),
        ("COVIEW_SHARE_KEY_DIGITS", "13", "share_key_digits"),
        ("COVIEW_SHARE_KEY_TTL_S", "0", "share_key_ttl_s"),
        ("COVIEW_SHARE_KEY_TTL_S", "7200", "share_key_ttl_s"),
        ("COVIEW_SHARE_KEY_ADDRESS_LIMIT", "0", "share_key_address_limit"),
    ):
        with pytest.raises(ValueError, match=words):
            Settings.load(environ={name: value})


# --- the hub's phone shares ------------------------------------------------------------

CALLER = "203.0.113.7"
UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
_HASH: list[str] = []


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _HASH:
        _HASH.append(hash_password("not used"))
    monkeypatch.setattr(store_module, "hash_password", lambda password: _HASH[0])


async def _world(tmp_path: Path, **settings: str) -> AsyncIterator[World]:
    store = await Store.open("sqlite+aiosqlite:///" + str(tmp_path / "db.sqlite"))
    clock = FakeClock()
    config = Settings.load(environ={"COVIEW_" + k.upper(): v for k, v in settings.items()})
    hub = Hub(store, config, clock=clock, wall=clock.wall)
    try:
        yield World(hub, store, clock, config)
    finally:
        await store.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in _world(tmp_path):
        yield w


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[World]:
    async for w in _world(tmp_path, share_key_address_limit="3"):
        yield w


async def start(w: World, agent: Conn, conversation: int | None = None) -> tuple[str, str, int]:
    """The agent starts a phone share; returns (share, key, conversation)."""
    await w.send(agent, "phone_share_start", conversation=conversation)
    got = drain(agent)
    (key_msg,) = of(got, "phone_share_key")
    assert last_state(got)["state"] == S.REQUESTED
    return key_msg["share"], key_msg["key"], key_msg["conversation"]


def wrong(key: str, n: int = 1) -> str:
    """A key of the same length that is not ``key``."""
    return f"{(int(key) + n) % 10 ** len(key):0{len(key)}d}"


@pytest.mark.anyio
async def test_start_makes_a_phone_conversation_a_share_and_a_key(world: World) -> None:
    alice, bob = await world.user("Alice"), await world.user("Bob")
    a, b = await world.agent(alice), await world.agent(bob)
    drain(a), drain(b)
    await world.send(a, "phone_share_start")
    got = drain(a)
    update = of(got, "conversation_update")[0]["item"]
    assert update["channel"] == "phone" and update["status"] == "open"
    assert update["agent_id"] == alice.id and update["visitor_label"].startswith("Phone caller")
    (key_msg,) = of(got, "phone_share_key")
    key = key_msg["key"]
    assert re.fullmatch(r"[0-9]{6}", key) and key_msg["expires_in"] == 300.0
    assert last_state(got) == P.make(
        "share_state",
        share=key_msg["share"],
        conversation=update["id"],
        state="requested",
        away=[],
    )
    assert "Alice gave the caller a screen share key, valid for 5 minutes." in [
        m["message"]["text"] for m in of(got, "chat")
    ]
    assert drain(b) == [], "another agent sees neither the caller nor the key"

    row = await world.store.get_share_key(key_msg["share"])
    assert row is not None and row.key_hash == world.hub.keyring.digest(key)
    assert row.expires_at == world.clock.wall() + 300 and row.wrong_attempts == 0
    share = await world.store.get_share(key_msg["share"])
    assert share is not None and share.token_hash is None, "no popup token before the key"
    # The key itself is nowhere in the database.
    async with world.store.engine.connect() as conn:
        for table in ("share_keys", "shares", "messages", "conversations", "visitors"):
            rows = (await conn.execute(text(f"SELECT * FROM {table}"))).fetchall()
            assert all(key not in str(value) for r in rows for value in r), table


@pytest.mark.anyio
async def test_the_right_key_opens_the_same_popup_as_a_chat_share(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The endpoint checks token expiry on the wall clock: give it the world's.
    monkeypatch.setattr(signaling, "time", types.SimpleNamespace(time=world.clock.wall))
    a = await world.agent(await world.user("Alice"))
    drain(a)
    share, key, conv = await start(world, a)
    claim = await world.hub.claim_key(key[:3] + " " + key[3:], CALLER, user_agent=UA)
    assert claim.outcome == keys.WRONG, "the page normalises; the hub takes digits only"
    drain(a)
    claim = await world.hub.claim_key(key, CALLER, user_agent=UA)
    assert claim.outcome == keys.OK and claim.share == share
    assert claim.proof == world.hub.keyring.proof(key)
    match = re.fullmatch(r"/popup#share=([^&]+)&t=(.+)", claim.popup_url or "")
    assert match and match.group(1) == share
    got = drain(a)
    state = last_state(got)
    assert (state["state"], state["note"]) == ("accepted", "The caller entered the key.")
    assert "The caller entered the key." in [m["message"]["text"] for m in of(got, "chat")]
    record = of(got, "visitor")[-1]["record"]
    assert (record["browser"], record["os"], record["page"]) == ("Chrome 126", "Linux", "/share")
    row = await world.store.get_share_key(share)
    assert row is not None and row.used_at == world.clock.wall()

    # The popup spends its token exactly as a chat visitor's does, once.
    token = match.group(2)
    assert (await signaling._claim_share(world.store, token, "resume"))[0].id == share
    with pytest.raises(signaling.Refused) as again:
        await signaling._claim_share(world.store, token, "resume")
    assert again.value.code == P.USED
    sharer = await world.sharer(share)
    await world.send(a, "share_watch", share=share)
    await world.send(sharer, "share_media", share=share, surface="browser")
    assert states(drain(a))[-1] == "live"


@pytest.mark.anyio
async def test_a_key_works_once(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    share, key, _ = await start(world, a)
    first = await world.hub.claim_key(key, CALLER)
    assert first.outcome == keys.OK
    assert (await world.hub.claim_key(key, "198.51.100.1")).outcome == keys.WRONG
    # The browser that spent it, and only that one, hears that it was used.
    again = await world.hub.claim_key(key, CALLER, proof=first.proof)
    assert again.outcome == keys.USED_HERE
    forged = await world.hub.claim_key(key, CALLER, proof="0" * 64)
    assert forged.outcome == keys.WRONG
    assert world.hub.shares[share].session.state == S.ACCEPTED, "refusals change nothing"


@pytest.mark.anyio
async def test_a_key_expires_with_its_share(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    share, key, conv = await start(world, a)
    world.clock.advance(300)
    # Unusable at its expiry even before the tick ends the share.
    assert (await world.hub.claim_key(key, CALLER)).outcome == keys.WRONG
    await world.hub.tick()
    got = drain(a)
    assert last_state(got)["reason"] == S.REQUEST_TIMEOUT
    assert "The screen share key expired before the caller entered it." in [
        m["message"]["text"] for m in of(got, "chat")
    ]
    assert (await world.hub.claim_key(key, CALLER)).outcome == keys.WRONG
    row = await world.store.get_share(share)
    assert row is not None and row.end_reason == S.REQUEST_TIMEOUT


@pytest.mark.anyio
async def test_five_wrong_attempts_lock_the_key(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    share, key, conv = await start(world, a)
    for n in range(1, MAX_WRONG):
        assert (await world.hub.claim_key(wrong(key, n), CALLER)).outcome == keys.WRONG
        note = last_state(drain(a))["note"]
        assert note == f"Wrong keys entered so far: {n} (the key locks at 5)."
    assert (await world.hub.claim_key(wrong(key, 5), CALLER)).outcome == keys.WRONG
    got = drain(a)
    assert last_state(got)["state"] == "ended" and last_state(got)["reason"] == S.KEY_LOCKED
    assert "The screen share key was locked after 5 wrong attempts." in [
        m["message"]["text"] for m in of(got, "chat")
    ]
    assert (await world.hub.claim_key(key, CALLER)).outcome == keys.WRONG, "locked for good"
    row = await world.store.get_share_key(share)
    assert row is not None and row.wrong_attempts == 5 and row.locked_at is not None
    assert row.used_at is None

    # The agent makes a new key for the same caller.
    share2, key2, conv2 = await start(world, a, conversation=conv)
    assert conv2 == conv and share2 != share
    assert (await world.hub.claim_key(key2, CALLER)).outcome == keys.OK


@pytest.mark.anyio
async def test_a_wrong_attempt_counts_against_every_waiting_key(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    b = await world.agent(await world.user("Bob"))
    share_a, key_a, _ = await start(world, a)
    share_b, key_b, _ = await start(world, b)
    guess = next(wrong(key_a, n) for n in range(1, 9) if wrong(key_a, n) != key_b)
    await world.hub.claim_key(guess, CALLER)
    for share in (share_a, share_b):
        row = await world.store.get_share_key(share)
        assert row is not None and row.wrong_attempts == 1
    # A right key is no wrong attempt against the other.
    assert (await world.hub.claim_key(key_a, CALLER)).outcome == keys.OK
    row = await world.store.get_share_key(share_b)
    assert row is not None and row.wrong_attempts == 1


@pytest.mark.anyio
async def test_attempts_are_rate_limited_per_address(limited: World) -> None:
    w = limited
    a = await w.agent(await w.user("Alice"))
    share, key, _ = await start(w, a)
    for n in (1, 2, 3):
        assert (await w.hub.claim_key(wrong(key, n), CALLER)).outcome == keys.WRONG
    # Over the limit even the right key is refused, and refused attempts count against nothing.
    assert (await w.hub.claim_key(wrong(key, 4), CALLER)).outcome == keys.RATE_LIMITED
    assert (await w.hub.claim_key(key, CALLER)).outcome == keys.RATE_LIMITED
    row = await w.store.get_share_key(share)
    assert row is not None and row.wrong_attempts == 3
    # Another address still may; the window slides.
    assert (await w.hub.claim_key(key, "198.51.100.1")).outcome == keys.OK
    w.clock.advance(keys.ADDRESS_WINDOW_S + 1)
    assert (await w.hub.claim_key(key, CALLER)).outcome == keys.WRONG


@pytest.mark.anyio
async def test_a_key_dies_with_its_share(world: World) -> None:
    a = await world.agent(await world.user("Alice"))
    share, key, _ = await start(world, a)
    await world.send(a, "share_stop", share=share)
    assert (await world.hub.claim_key(key, CALLER)).outcome == keys.WRONG


@pytest.mark.anyio
async def test_waiting_keys_never_collide(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    a = await world.agent(await world.user("Alice"))
    b = await world.agent(await world.user("Bob"))
    drawn = iter(["111111", "111111", "111111", "222222"])
    monkeypatch.setattr(world.hub.keyring, "mint", lambda: next(drawn))
    _, key_a, _ = await start(world, a)
    _, key_b, _ = await start(world, b)
    assert (key_a, key_b) == ("111111", "222222")


@pytest.mark.anyio
async def test_start_refusals(world: World) -> None:
    alice = await world.user("Alice")
    a = await world.agent(alice)
    b = await world.agent(await world.user("Bob"))
    share, _key, conv = await start(world, a)
    assert await world.refused(a, "phone_share_start", conversation=conv) == P.CONFLICT
    assert await world.refused(b, "phone_share_start", conversation=conv) == P.FORBIDDEN
    assert await world.refused(a, "phone_share_start", conversation=4444) == P.NOT_FOUND
    v = await world.visitor()
    await world.chat(v, "Hello", "m1")
    chat_conv = of(drain(v), "chat")[-1]["conversation"]
    await world.send(a, "conversation_take", conversation=chat_conv)
    assert await world.refused(a, "phone_share_start", conversation=chat_conv) == P.NOT_FOUND
    assert await world.refused(v, "phone_share_start") == P.FORBIDDEN
    # A phone caller cannot be asked like a chat visitor: there is no widget to ask.
    await world.send(a, "share_stop", share=share)
    assert await world.refused(a, "share_request", conversation=conv) in (
        P.UNSUPPORTED_BROWSER,
        P.CONFLICT,
    )
    assert await world.store.get_share_key(share) is not None, "refusals leave data intact"
