"""The broker's behaviour, the same on both implementations.

Every test in the first part runs twice: on :class:`InProcessBroker` (several brokers on
one bus stand for several processes) and on :class:`RedisBroker` against a real
redis-server (tests/services.py). The second part is about Redis going away.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from coview_server.broker import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    InProcessBroker,
    InProcessBus,
    NoResponder,
    RedisBroker,
    RemoteError,
    RequestTimeout,
    Rpc,
    SubscriptionOverflow,
    broker_for,
)
from tests.services import RedisServer, find_redis_server, require

pytestmark = pytest.mark.anyio

MakeBroker = Callable[..., Awaitable[Broker]]
_prefixes = itertools.count()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """``memory``, or the URL of the session's redis-server."""
    if request.param == "memory":
        return "memory"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def make_broker(backend: str) -> AsyncIterator[MakeBroker]:
    """Started brokers of one deployment (one bus, or one Redis and prefix); closed after."""
    made: list[Broker] = []
    bus = InProcessBus()
    prefix = f"test{next(_prefixes)}:"

    async def make(**options: Any) -> Broker:
        broker: Broker = (
            InProcessBroker(bus, **options)
            if backend == "memory"
            else RedisBroker(backend, prefix=prefix, **options)
        )
        await broker.start()
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.close()


async def _collect(sub: Any, n: int, timeout_s: float = 10.0) -> list[bytes]:
    return [await sub.get(timeout_s) for _ in range(n)]


# --- publish/subscribe ------------------------------------------------------------------


async def test_publish_reaches_every_subscriber_of_the_channel(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker()
    on_a = await a.subscribe("room")
    on_b = await b.subscribe("room")
    on_b2 = await b.subscribe("room")
    other = await b.subscribe("other")

    reached = await a.publish("room", b"hello")
    assert reached >= 2  # subscriptions in-process, processes on Redis
    for sub in (on_a, on_b, on_b2):
        assert await sub.get(5) == b"hello"
    assert await a.publish("nobody-here", b"x") == 0
    await a.publish("other", b"o")
    assert await other.get(5) == b"o"
    with pytest.raises(TimeoutError):
        await on_a.get(0.05)  # nothing else arrived for it


async def test_every_subscription_is_active_when_subscribe_returns(
    make_broker: MakeBroker,
) -> None:
    a, b = await make_broker(), await make_broker()
    first = asyncio.create_task(b.subscribe("same"))
    await asyncio.sleep(0)  # the first subscribe is under way (waiting for Redis to confirm)
    second = await b.subscribe("same")
    assert await a.publish("same", b"x") >= 1
    assert await second.get(5) == b"x"
    assert await (await first).get(5) == b"x"


async def test_order_is_kept_per_publisher(make_broker: MakeBroker) -> None:
    a, b, c = await make_broker(), await make_broker(), await make_broker()
    subs = [await b.subscribe("ordered"), await c.subscribe("ordered")]
    expected = []
    for i in range(300):
        data = str(i).encode()
        expected.append(data)
        if i % 3 == 0:
            await a.publish("ordered", data)
        else:
            a.publish_nowait("ordered", data)  # queued behind the awaited ones
    results = await asyncio.gather(*(_collect(s, len(expected)) for s in subs))
    assert results == [expected, expected]


async def test_payloads_are_bytes_as_they_are(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker()
    sub = await b.subscribe("bin")
    payloads = [b"", bytes(range(256)), b"\n\x00\r\n", "é🙂".encode(), b"x" * (1 << 20)]
    for p in payloads:
        await a.publish("bin", p)
    assert await _collect(sub, len(payloads)) == payloads


async def test_closed_subscription_ends_iteration_and_gets_nothing(
    make_broker: MakeBroker,
) -> None:
    a, b = await make_broker(), await make_broker()
    sub = await b.subscribe("c")
    keep = await b.subscribe("c")
    await a.publish("c", b"1")
    got: list[bytes] = []

    async def read() -> None:
        async for data in sub:
            got.append(data)
            if data == b"1":
                await sub.close()

    await asyncio.wait_for(read(), 10)  # iteration ended by close()
    assert got == [b"1"] and sub.closed
    await a.publish("c", b"2")
    assert await _collect(keep, 2) == [b"1", b"2"]  # the other subscription still receives
    await sub.close()  # idempotent
    await keep.close()
    assert await a.publish("c", b"3") == 0  # nobody subscribed any more

    async with await b.subscribe("ctx") as scoped:
        await a.publish("ctx", b"x")
        assert await scoped.get(5) == b"x"
    assert scoped.closed


async def test_a_reader_that_falls_behind_is_cut_off(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker(max_pending=5)
    slow = await b.subscribe("flood")
    for i in range(6):
        await a.publish("flood", str(i).encode())
    assert await _collect(slow, 5) == [b"0", b"1", b"2", b"3", b"4"]
    with pytest.raises(SubscriptionOverflow):
        await slow.get(5)
    again = await b.subscribe("flood")  # the channel itself still works
    await a.publish("flood", b"after")
    assert await again.get(5) == b"after"


async def test_close_ends_subscriptions_and_refuses_more(make_broker: MakeBroker) -> None:
    a = await make_broker()
    sub = await a.subscribe("x")
    await a.close()
    assert [m async for m in sub] == []
    with pytest.raises(BrokerUnavailable):
        await a.publish("x", b"late")
    with pytest.raises(BrokerUnavailable):
        await a.subscribe("x")


# --- leases ---------------------------------------------------------------------------------


async def test_one_owner_at_a_time(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker()
    lease = await a.acquire("share:1", ttl_s=30)
    assert lease is not None and lease.held and lease.owner == a.node_id
    assert await b.acquire("share:1", ttl_s=30) is None
    assert await a.acquire("share:1", ttl_s=30) is None  # a second acquisition is another
    assert await b.lease_owner("share:1") == a.node_id
    other = await b.acquire("share:2", ttl_s=30)
    assert other is not None  # resources are independent

    await lease.release()
    assert not lease.held and not lease.lost.is_set()
    assert await b.lease_owner("share:1") is None
    taken = await b.acquire("share:1", ttl_s=30)
    assert taken is not None and await a.lease_owner("share:1") == b.node_id
    await lease.release()  # releasing twice does not free someone else's lease
    assert await a.lease_owner("share:1") == b.node_id


async def test_a_lease_is_renewed_while_held(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker()
    # A TTL well above the event loop's stalls on a loaded machine (renewals come every
    # third of it): b waits three TTLs for it, in vain, because a's renewals keep it.
    lease = await a.acquire("r", ttl_s=1.0)
    assert lease is not None
    assert await b.acquire("r", ttl_s=1.0, wait_s=3.0) is None
    assert lease.held and await b.lease_owner("r") == a.node_id


async def test_a_waiter_gets_the_lease_as_soon_as_it_is_released(
    make_broker: MakeBroker,
) -> None:
    a, b = await make_broker(), await make_broker()
    lease = await a.acquire("r", ttl_s=60)
    assert lease is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(b.acquire("r", ttl_s=60, wait_s=30))
    await asyncio.sleep(0)  # let the waiter start waiting (it may also try first: fine)
    await lease.release()
    got = await asyncio.wait_for(waiter, 30)
    assert got is not None and got.owner == b.node_id
    assert loop.time() - started < 10  # woken by the release, not by the 60 s TTL


async def test_the_lease_of_a_dead_holder_is_taken_over_after_its_ttl(
    make_broker: MakeBroker,
) -> None:
    a, b = await make_broker(), await make_broker()
    lease = await a.acquire("r", ttl_s=2.0)  # well above a loaded loop's stalls
    assert lease is not None
    await a.abort()  # a crash: nothing released, nothing renewed
    assert lease.lost.is_set() and not lease.held
    assert await b.acquire("r", ttl_s=2.0) is None  # not yet: the TTL runs
    loop = asyncio.get_running_loop()
    started = loop.time()
    taken = await b.acquire("r", ttl_s=5, wait_s=20)
    assert taken is not None and taken.held
    assert loop.time() - started < 10
    assert await b.lease_owner("r") == b.node_id


async def _expire(broker: Broker, resource: str) -> None:
    """The lease on ``resource`` runs out now, as a dead holder's does: no release message."""
    if isinstance(broker, InProcessBroker):
        broker.bus.leases.pop(resource)
    else:
        assert isinstance(broker, RedisBroker)
        await broker._cmd.delete(broker._lease_key(resource))


async def test_a_lease_that_runs_out_between_a_try_and_the_wait_is_taken_at_once(
    make_broker: MakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in a cluster failover: the dead leader's lease expired between the survivor's try
    and its look at the time left, and the survivor slept for its whole wait."""
    a, b = await make_broker(), await make_broker()
    assert await a.acquire("r", ttl_s=60) is not None
    real_try = b._try_acquire
    tries: list[bool] = []

    async def try_then_expire(resource: str, value: str, ttl_s: float) -> bool:
        got = await real_try(resource, value, ttl_s)
        tries.append(got)
        if not got and len(tries) == 1:
            await _expire(a, resource)
        return got

    monkeypatch.setattr(b, "_try_acquire", try_then_expire)
    loop = asyncio.get_running_loop()
    started = loop.time()
    taken = await b.acquire("r", ttl_s=60, wait_s=30)
    assert taken is not None and taken.held
    assert tries == [False, True]
    assert loop.time() - started < 5  # not the 30 s wait


async def test_close_releases_leases(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker()
    assert await a.acquire("r", ttl_s=60) is not None
    await a.close()
    assert await b.acquire("r", ttl_s=60) is not None  # at once, no TTL to wait for


async def test_acquire_checks_its_arguments(make_broker: MakeBroker) -> None:
    a = await make_broker()
    with pytest.raises(ValueError):
        await a.acquire("r", ttl_s=0)


# --- request/reply -----------------------------------------------------------------------------


async def test_request_and_reply_across_brokers(make_broker: MakeBroker) -> None:
    a, b = await make_broker(), await make_broker()
    release = asyncio.Event()

    async def upper(body: bytes) -> bytes:
        if body == b"boom":
            raise KeyError("no such share")
        if body == b"hang":
            await release.wait()
        return body.upper()

    async with Rpc(a) as server, Rpc(b) as client:
        await server.serve("svc", upper)
        assert await client.request("svc", b"hi", timeout_s=10) == b"HI"
        # Concurrent requests each get their own answer.
        bodies = [f"req{i}".encode() for i in range(30)]
        answers = await asyncio.gather(*(client.request("svc", x, 10) for x in bodies))
        assert answers == [x.upper() for x in bodies]
        with pytest.raises(RemoteError, match="KeyError"):
            await client.request("svc", b"boom", 10)
        with pytest.raises(NoResponder):
            await client.request("nobody-serves-this", b"?", 10)
        with pytest.raises(RequestTimeout):
            await client.request("svc", b"hang", timeout_s=0.2)
        release.set()
        # The late answer to the timed-out request is dropped; the next one is right.
        assert await client.request("svc", b"after", 10) == b"AFTER"


async def test_a_broker_must_be_started() -> None:
    broker = InProcessBroker()
    with pytest.raises(BrokerError):
        await broker.subscribe("x")
    assert isinstance(broker_for(""), InProcessBroker)
    assert isinstance(broker_for("redis://127.0.0.1:1/0"), RedisBroker)


# --- Redis going away -----------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop and restart."""
    binary = require(find_redis_server)
    with RedisServer(binary) as server:
        yield server


async def test_unreachable_redis_fails_start_clearly(own_redis: RedisServer) -> None:
    own_redis.stop()
    broker = RedisBroker(own_redis.url, connect_timeout_s=2)
    with pytest.raises(BrokerUnavailable, match="cannot reach Redis"):
        await broker.start()


async def test_subscriber_survives_a_redis_restart(own_redis: RedisServer) -> None:
    """Decided behaviour: subscriptions stay open and receive new messages once the broker
    has reconnected (``on_reconnect`` tells when); what was published meanwhile is lost,
    and publishing while Redis is down raises BrokerUnavailable."""
    async with (
        RedisBroker(own_redis.url, prefix="r:") as a,
        RedisBroker(own_redis.url, prefix="r:") as b,
    ):
        back = asyncio.Event()
        a.on_reconnect(back.set)
        sub = await a.subscribe("live")
        lease = await a.acquire("owned", ttl_s=1.5)
        assert lease is not None
        await b.publish("live", b"before")
        assert await sub.get(5) == b"before"

        own_redis.stop()
        with pytest.raises(BrokerUnavailable):
            await b.publish("live", b"while down")
        own_redis.start()

        await asyncio.wait_for(back.wait(), 20)
        assert a.reconnects == 1 and not sub.closed
        assert await b.publish("live", b"after") == 1
        assert await sub.get(5) == b"after"  # "while down" is gone: nothing in between
        # A Redis without persistence forgot the lease: the holder learns it at renewal.
        await asyncio.wait_for(lease.lost.wait(), 10)
        assert not lease.held
        again = await a.acquire("owned", ttl_s=5)
        assert again is not None

        # A new subscription after the restart works too, from either broker.
        late = await b.subscribe("late")
        await a.publish("late", b"x")
        assert await late.get(5) == b"x"
