"""Messages between Coview processes: publish/subscribe, leases, request/reply.

The seam the signaling hub fans out through, so that a visitor connected to one process
and an agent connected to another can share. Two implementations of one interface:

* :class:`InProcessBroker` (the default, embedded deployment): everything stays in the
  process. Several brokers may share one :class:`InProcessBus` to stand for several
  processes in tests.
* :class:`RedisBroker` (several processes): Redis pub/sub through redis-py's asyncio
  client, leases as Redis keys (``SET NX PX``, renewed and released by compare-and-set
  Lua scripts).

What every implementation guarantees (``tests/unit/server/test_broker.py`` runs the same
tests on both):

* **Channels** are strings; messages are bytes. Channel names starting with ``_`` are
  reserved for the broker itself (lease and reply channels).
* **Order**: everything one broker publishes (``publish`` and ``publish_nowait`` alike)
  reaches each subscriber in the order it was published. There is no order between two
  publishers.
* **At most once**: a message reaches the subscriptions that exist when it is delivered,
  or nobody. Nothing is stored for later, nothing is sent twice; ``publish`` returns how
  many receivers there were (subscriptions in-process, subscribed processes on Redis), so
  0 means nobody heard it.
* **subscribe()** returns once the subscription is active: a message published after it
  returns is delivered to it.
* **Leases** elect one owner of a resource (a share, a conversation) for ``ttl_s``
  seconds, renewed every third of that while held; a holder that dies stops renewing and
  another process takes over once the TTL has run out. A lease found taken or expired at
  renewal is *lost* (``Lease.lost`` is set): the holder must stop acting as the owner.

Redis going away (a restart, a network cut) -- the behaviour the hub can rely on:

* Subscriptions stay open. The broker reconnects by itself (backoff from 50 ms to 2 s)
  and subscribes every open channel again before it calls the ``on_reconnect``
  callbacks; from then on new messages flow again. **Messages published while it was
  away are lost** (pub/sub keeps nothing): ``on_reconnect`` is where the hub resynchronises
  state from the database. A connection that goes silent is noticed by a ping every
  ``ping_interval_s``.
* ``publish`` while Redis cannot be reached raises :class:`BrokerUnavailable` (it is not
  retried: a retry could deliver twice); ``publish_nowait`` drops the message and logs.
  ``subscribe`` waits up to ``subscribe_timeout_s`` for the reconnection, then raises
  :class:`BrokerUnavailable`.
* Leases: a holder that cannot renew keeps its lease until its TTL runs out (counted from
  its last successful renewal), then loses it. A Redis restart without persistence forgets
  every lease: holders find that at their next renewal and lose them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Self

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "InProcessBroker",
    "InProcessBus",
    "Lease",
    "NoResponder",
    "RedisBroker",
    "RemoteError",
    "RequestTimeout",
    "Rpc",
    "Service",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionOverflow",
    "broker_for",
    "new_node_id",
]

log = logging.getLogger("coview.broker")

#: Messages a subscription may hold unread before it is ended (a stuck reader must not
#: eat the process's memory).
DEFAULT_MAX_PENDING: Final = 10_000
#: Messages ``publish_nowait`` may queue for Redis before it refuses more.
DEFAULT_MAX_OUTBOX: Final = 100_000
PUBLISH_BATCH: Final = 256
RECONNECT_FIRST_S: Final = 0.05
RECONNECT_MAX_S: Final = 2.0


class BrokerError(Exception):
    """Something the broker could not do."""


class BrokerUnavailable(BrokerError):
    """Redis cannot be reached (or the broker is closed)."""


class SubscriptionClosed(BrokerError):
    """``get()`` on a subscription that was closed."""


class SubscriptionOverflow(BrokerError):
    """The subscription was ended: its reader fell ``max_pending`` messages behind."""


class RequestTimeout(BrokerError, TimeoutError):
    """No reply came in time."""


class NoResponder(BrokerError):
    """Nobody serves the channel a request was sent to."""


class RemoteError(BrokerError):
    """The handler serving a request raised; the message says what."""


def new_node_id() -> str:
    """A name for this process, unique in a deployment: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class _End:
    pass


_END: Final = _End()


class Subscription:
    """The messages of one channel, in order. ``async for data in sub``, or ``get()``.

    Iteration ends after :meth:`close` (or the broker's ``close()``); it raises
    :class:`BrokerError` when the broker ended the subscription (overflow, ``abort()``).
    """

    def __init__(
        self, broker: Broker, channel: str, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self.channel = channel
        self._broker = broker
        self._queue: asyncio.Queue[bytes | _End] = asyncio.Queue()
        self._max = max_pending
        self._closed = False
        self._error: BrokerError | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, data: bytes) -> bool:
        if self._closed:
            return False
        if self._queue.qsize() >= self._max:
            self._end(SubscriptionOverflow(f"{self.channel}: {self._max} messages unread"))
            self._broker._forget(self)
            return False
        self._queue.put_nowait(data)
        return True

    def _end(self, error: BrokerError | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._queue.put_nowait(_END)

    async def get(self, timeout_s: float | None = None) -> bytes:
        """The next message; ``TimeoutError`` after ``timeout_s`` seconds without one."""
        async with asyncio.timeout(timeout_s):
            item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # stays ended for every later call
            raise self._error or SubscriptionClosed(self.channel)
        return item

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Stop receiving; unread messages are dropped. Idempotent."""
        if self._closed:
            return
        while not self._queue.empty():
            self._queue.get_nowait()
        self._end(None)
        await self._broker._unsubscribe(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Lease:
    """Ownership of ``resource`` by this broker's node, renewed in the background.

    ``held`` is true until :meth:`release` or until the lease is lost; ``lost`` is an
    event the owner can wait on (``reason`` says why).
    """

    def __init__(self, broker: Broker, resource: str, value: str, ttl_s: float) -> None:
        self.resource = resource
        self.owner = broker.node_id
        self.ttl_s = ttl_s
        self.lost = asyncio.Event()
        self.reason: str | None = None
        self._broker = broker
        self._value = value
        self._released = False
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + ttl_s
        self._task = loop.create_task(self._renew_loop(), name=f"lease {resource}")

    @property
    def held(self) -> bool:
        return not self._released and not self.lost.is_set()

    def _lose(self, reason: str) -> None:
        if self.lost.is_set() or self._released:
            return
        self.reason = reason
        self.lost.set()
        self._broker._leases.discard(self)
        log.warning("lease on %s lost: %s", self.resource, reason)

    async def _renew_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.ttl_s / 3
        next_at = loop.time() + interval
        while True:
            # The renewal schedule itself (not a wait for something to happen).
            await asyncio.sleep(max(0.0, min(next_at, self._deadline) - loop.time()))
            sent = loop.time()
            if sent >= self._deadline:
                self._lose("expired: could not renew in time")
                return
            try:
                async with asyncio.timeout(self._deadline - sent):
                    ok = await self._broker._renew(self.resource, self._value, self.ttl_s)
            except (BrokerUnavailable, TimeoutError):
                next_at = loop.time() + min(interval, RECONNECT_MAX_S)
                continue
            if not ok:
                self._lose("taken over or expired")
                return
            self._deadline = sent + self.ttl_s
            next_at = sent + interval

    def _stop(self) -> None:
        self._task.cancel()

    async def release(self) -> None:
        """Give the resource up now (others waiting in ``acquire`` get it at once)."""
        if self._released:
            return
        was_held = self.held
        self._released = True
        self._stop()
        self._broker._leases.discard(self)
        if was_held:
            with contextlib.suppress(BrokerError):
                await self._broker._release(self.resource, self._value)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


def _lease_free_channel(resource: str) -> str:
    return f"_lease_free:{resource}"


class _Lifecycle:
    """``async with`` for what must be ``start()``-ed and ``close()``-d."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Broker(_Lifecycle, abc.ABC):
    """Publish/subscribe between processes, and leases. Use as ``async with``."""

    def __init__(self, *, node_id: str | None = None, max_pending: int = DEFAULT_MAX_PENDING):
        self.node_id = node_id or new_node_id()
        self._max_pending = max_pending
        self._subs: dict[str, set[Subscription]] = {}
        self._activating: dict[str, asyncio.Task[None]] = {}
        self._leases: set[Lease] = set()
        self._reconnect_callbacks: list[Callable[[], Awaitable[None] | None]] = []
        self._started = False
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; raises :class:`BrokerUnavailable` when the backend cannot be reached."""
        self._started = True

    async def close(self) -> None:
        """Release every lease, end every subscription (iteration stops), disconnect."""
        if self._closed:
            return
        for lease in list(self._leases):
            await lease.release()
        self._closed = True
        self._end_all(None)
        await self._disconnect()

    async def abort(self) -> None:
        """Stop at once as a crashed process would: leases are not released (they expire
        after their TTL, then others take over), subscriptions end with an error."""
        if self._closed:
            return
        self._closed = True
        for lease in list(self._leases):
            lease._stop()
            lease._lose("broker aborted")
        self._end_all(BrokerUnavailable("broker aborted"))
        await self._disconnect()

    def on_reconnect(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Call ``callback`` after every reconnection to the backend, once every open
        subscription is active again: messages may have been lost meanwhile."""
        self._reconnect_callbacks.append(callback)

    async def _reconnected(self) -> None:
        for callback in list(self._reconnect_callbacks):
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:
                log.exception("broker reconnect callback failed")

    def _end_all(self, error: BrokerError | None) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub._end(error)
        self._subs.clear()

    # --- publish/subscribe ---------------------------------------------------------------

    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes) -> int:
        """Send ``data`` to ``channel``'s subscribers; how many there were (0: nobody)."""

    @abc.abstractmethod
    def publish_nowait(self, channel: str, data: bytes) -> None:
        """Send without waiting (in order with every other publish of this broker);
        for callers that cannot await. Failures are logged, not raised."""

    async def subscribe(self, channel: str) -> Subscription:
        """A subscription to ``channel``, active when this returns."""
        self._check_open()
        sub = Subscription(self, channel, self._max_pending)
        subs = self._subs.setdefault(channel, set())
        first = not subs
        subs.add(sub)
        try:
            if first:
                ready = asyncio.get_running_loop().create_task(self._remote_subscribe(channel))
                self._activating[channel] = ready
                try:
                    await ready
                finally:
                    if self._activating.get(channel) is ready:
                        del self._activating[channel]
            elif channel in self._activating:
                # Another subscriber of this channel is still waiting for it to be active.
                await asyncio.shield(self._activating[channel])
        except BaseException:
            self._forget(sub)
            sub._end(None)
            raise
        return sub

    def _dispatch(self, channel: str, data: bytes) -> int:
        delivered = 0
        for sub in list(self._subs.get(channel, ())):
            delivered += sub._deliver(data)
        return delivered

    def _forget(self, sub: Subscription) -> bool:
        """Drop ``sub``; True when it was the channel's last one."""
        subs = self._subs.get(sub.channel)
        if subs is None or sub not in subs:
            return False
        subs.discard(sub)
        if subs:
            return False
        del self._subs[sub.channel]
        if not self._closed:
            self._after_forget(sub.channel)
        return True

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._forget(sub) and not self._closed:
            await self._remote_unsubscribe(sub.channel)

    @abc.abstractmethod
    def _after_forget(self, channel: str) -> None:
        """A channel lost its last subscription without an await (overflow)."""

    @abc.abstractmethod
    async def _remote_subscribe(self, channel: str) -> None:
        """Make the backend deliver ``channel`` here; return once it does."""

    @abc.abstractmethod
    async def _remote_unsubscribe(self, channel: str) -> None:
        """Stop the backend delivering ``channel`` here."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Close connections and background tasks."""

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("broker closed")
        if not self._started:
            raise BrokerError("broker not started (use `async with` or await start())")

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, resource: str, ttl_s: float, *, wait_s: float = 0.0) -> Lease | None:
        """Become ``resource``'s owner for ``ttl_s`` seconds (renewed while held).

        None when someone else holds it and has not let go within ``wait_s`` seconds; a
        waiter wakes when the holder releases it or when its lease runs out.
        """
        self._check_open()
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        value = f"{secrets.token_hex(8)}:{self.node_id}"
        if wait_s <= 0:
            return (
                self._held(resource, value, ttl_s)
                if await self._try_acquire(resource, value, ttl_s)
                else None
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # Subscribed before trying, so a release between the try and the wait is heard.
        async with await self.subscribe(_lease_free_channel(resource)) as freed:
            while True:
                if await self._try_acquire(resource, value, ttl_s):
                    return self._held(resource, value, ttl_s)
                left = deadline - loop.time()
                if left <= 0:
                    return None
                expires_in = await self._expires_in(resource)
                if expires_in is None:
                    # It ran out since the try (a dead holder's lease expires silently: no
                    # release message would ever wake this wait): try again now.
                    continue
                with contextlib.suppress(TimeoutError):
                    await freed.get(max(min(left, expires_in), 0.001))

    def _held(self, resource: str, value: str, ttl_s: float) -> Lease:
        lease = Lease(self, resource, value, ttl_s)
        self._leases.add(lease)
        return lease

    async def lease_owner(self, resource: str) -> str | None:
        """The node id holding ``resource`` now, or None."""
        self._check_open()
        value = await self._lease_value(resource)
        return None if value is None else value.partition(":")[2]

    @abc.abstractmethod
    async def _try_acquire(self, resource: str, value: str, ttl_s: float) -> bool: ...

    @abc.abstractmethod
    async def _renew(self, resource: str, value: str, ttl_s: float) -> bool: ...

    @abc.abstractmethod
    async def _release(self, resource: str, value: str) -> None: ...

    @abc.abstractmethod
    async def _lease_value(self, resource: str) -> str | None: ...

    @abc.abstractmethod
    async def _expires_in(self, resource: str) -> float | None:
        """Seconds until the current lease on ``resource`` runs out (None: none)."""


# --- in-process ------------------------------------------------------------------------------


class InProcessBus:
    """What the brokers of one "deployment" share in-process: brokers and leases."""

    def __init__(self) -> None:
        self.brokers: set[InProcessBroker] = set()
        #: resource -> (value, loop time it expires at)
        self.leases: dict[str, tuple[str, float]] = {}


class InProcessBroker(Broker):
    """Everything in this process: the embedded default (and a stand-in for Redis in
    tests, with several brokers on one :class:`InProcessBus`)."""

    def __init__(
        self,
        bus: InProcessBus | None = None,
        *,
        node_id: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        super().__init__(node_id=node_id, max_pending=max_pending)
        self.bus = bus or InProcessBus()

    async def start(self) -> None:
        await super().start()
        self.bus.brokers.add(self)

    async def _disconnect(self) -> None:
        self.bus.brokers.discard(self)

    # Delivery is a function call: nothing to set up or tear down per channel.
    def _after_forget(self, channel: str) -> None:
        pass

    async def _remote_subscribe(self, channel: str) -> None:
        pass

    async def _remote_unsubscribe(self, channel: str) -> None:
        pass

    def _fan_out(self, channel: str, data: bytes) -> int:
        self._check_open()
        return sum(b._dispatch(channel, data) for b in list(self.bus.brokers))

    async def publish(self, channel: str, data: bytes) -> int:
        return self._fan_out(channel, data)

    def publish_nowait(self, channel: str, data: bytes) -> None:
        self._fan_out(channel, data)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _live(self, resource: str) -> tuple[str, float] | None:
        current = self.bus.leases.get(resource)
        if current is not None and current[1] <= self._now():
            del self.bus.leases[resource]
            return None
        return current

    async def _try_acquire(self, resource: str, value: str, ttl_s: float) -> bool:
        current = self._live(resource)
        if current is not None and current[0] != value:
            return False
        self.bus.leases[resource] = (value, self._now() + ttl_s)
        return True

    async def _renew(self, resource: str, value: str, ttl_s: float) -> bool:
        current = self._live(resource)
        if current is None or current[0] != value:
            return False
        self.bus.leases[resource] = (value, self._now() + ttl_s)
        return True

    async def _release(self, resource: str, value: str) -> None:
        current = self._live(resource)
        if current is not None and current[0] == value:
            del self.bus.leases[resource]
            self._fan_out(_lease_free_channel(resource), b"")

    async def _lease_value(self, resource: str) -> str | None:
        current = self._live(resource)
        return None if current is None else current[0]

    async def _expires_in(self, resource: str) -> float | None:
        current = self._live(resource)
        return None if current is None else current[1] - self._now()


# --- Redis -----------------------------------------------------------------------------------

# KEYS[1] lease key; ARGV[1] holder's value; ARGV[2] TTL in ms. Idempotent, so a retried
# call after a lost reply cannot lock its own caller out.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2]) return 1
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# ARGV[2] the channel told that the resource is free.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1]) redis.call('publish', ARGV[2], '') return 1
end
return 0
"""

_CONNECTION_ERRORS = (RedisError, OSError)


class RedisBroker(Broker):
    """Redis pub/sub and keys (redis-py's asyncio client), for several processes.

    ``url`` is a redis-py URL (``redis://host:6379/0``, ``rediss://…`` for TLS,
    ``unix:///run/redis/redis.sock``). ``prefix`` starts every channel and key, so
    deployments may share one Redis (pub/sub ignores database numbers).

    One connection carries every subscription of the process; another publishes, in
    batches, from a single writer task (so publishes keep their order); a third pool
    serves leases.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "coview:",
        node_id: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_outbox: int = DEFAULT_MAX_OUTBOX,
        ping_interval_s: float = 5.0,
        subscribe_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(node_id=node_id, max_pending=max_pending)
        self.url = url
        self.prefix = prefix
        self.ping_interval_s = ping_interval_s
        self.subscribe_timeout_s = subscribe_timeout_s
        self.connect_timeout_s = connect_timeout_s
        #: Times the subscriber connection was made again after a loss.
        self.reconnects = 0
        self._raw_prefix = prefix.encode()
        self._control = self._key(f"_node:{self.node_id}")
        self._outbox: asyncio.Queue[tuple[bytes, bytes, asyncio.Future[int] | None]] = (
            asyncio.Queue(max_outbox)
        )
        self._confirm: dict[tuple[str, bytes], list[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()

        def client(retries: int) -> Redis:
            backoff = ExponentialBackoff(cap=0.5, base=0.05) if retries else NoBackoff()
            return Redis.from_url(
                url, retry=Retry(backoff, retries), socket_connect_timeout=connect_timeout_s
            )

        # Publishing is never retried: a lost reply would make a retry deliver twice.
        self._pub = client(0)
        # Subscriptions: reconnection is this class's own loop (_read_loop).
        self._sub = client(0)
        # Lease scripts are idempotent: safe to retry.
        self._cmd = client(2)

    def _key(self, name: str) -> bytes:
        return self._raw_prefix + name.encode()

    def _name(self, key: bytes) -> str:
        return key[len(self._raw_prefix) :].decode()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._cmd.ping()
        except (*_CONNECTION_ERRORS, TimeoutError) as e:
            await self._close_clients()
            raise BrokerUnavailable(f"cannot reach Redis at {self.url}: {e}") from e
        await super().start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._read_loop(), name="broker reader"),
            loop.create_task(self._write_loop(), name="broker writer"),
        ]
        try:
            async with asyncio.timeout(self.subscribe_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            await self.abort()
            raise BrokerUnavailable(f"cannot subscribe at {self.url}") from None

    async def _disconnect(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        while not self._outbox.empty():
            _, _, published = self._outbox.get_nowait()
            if published is not None and not published.done():
                published.set_exception(BrokerUnavailable("broker closed"))
        for futures in self._confirm.values():
            for confirmed in futures:
                if not confirmed.done():
                    confirmed.set_exception(BrokerUnavailable("broker closed"))
        self._confirm.clear()
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        for client in (self._pub, self._sub, self._cmd):
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await client.aclose()

    async def close(self) -> None:
        if not self._closed and self._started:
            # Let queued publishes go out first (bounded: Redis may be gone).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._outbox.join()
        await super().close()

    # --- publish -----------------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> int:
        self._check_open()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            self._outbox.put_nowait((self._key(channel), data, fut))
        except asyncio.QueueFull:
            raise BrokerUnavailable("too many messages waiting for Redis") from None
        return await fut

    def publish_nowait(self, channel: str, data: bytes) -> None:
        self._check_open()
        try:
            self._outbox.put_nowait((self._key(channel), data, None))
        except asyncio.QueueFull:
            log.warning("broker outbox full: message to %s dropped", channel)

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < PUBLISH_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                async with self._pub.pipeline(transaction=False) as pipe:
                    for key, data, _ in batch:
                        pipe.publish(key, data)
                    results: list[Any] = await pipe.execute()
            except Exception as e:  # a connection error, or anything else: never hang callers
                error = BrokerUnavailable(f"publish failed: {e}")
                dropped = 0
                for _, _, fut in batch:
                    if fut is None:
                        dropped += 1
                    elif not fut.done():
                        fut.set_exception(error)
                if dropped:
                    log.warning("broker: %d messages dropped: %s", dropped, e)
            else:
                for (_, _, fut), count in zip(batch, results, strict=True):
                    if fut is not None and not fut.done():
                        fut.set_result(int(count))
            finally:
                for _ in batch:
                    self._outbox.task_done()

    # --- subscribe ---------------------------------------------------------------------------

    def _expect(self, kind: str, key: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault((kind, key), []).append(fut)
        return fut

    def _confirmed(self, kind: str, key: bytes) -> None:
        for fut in self._confirm.pop((kind, key), []):
            if not fut.done():
                fut.set_result(None)

    async def _remote_subscribe(self, channel: str) -> None:
        key = self._key(channel)
        confirmed = self._expect("subscribe", key)
        pubsub = self._pubsub
        if pubsub is not None:
            # If this fails the reader reconnects and subscribes every channel in _subs.
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await pubsub.subscribe(key)
        try:
            async with asyncio.timeout(self.subscribe_timeout_s):
                await confirmed
        except TimeoutError:
            raise BrokerUnavailable(
                f"Redis did not confirm the subscription to {channel}"
            ) from None

    async def _remote_unsubscribe(self, channel: str) -> None:
        key = self._key(channel)
        pubsub = self._pubsub
        if pubsub is None:
            return  # not connected: the reconnection will not subscribe it again
        confirmed = self._expect("unsubscribe", key)
        try:
            await pubsub.unsubscribe(key)
            async with asyncio.timeout(self.subscribe_timeout_s):
                await confirmed
        except (*_CONNECTION_ERRORS, TimeoutError):
            pass  # the connection is going; so is the subscription

    def _after_forget(self, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return

        async def unsubscribe() -> None:
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await pubsub.unsubscribe(self._key(channel))

        task = asyncio.get_running_loop().create_task(unsubscribe())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = RECONNECT_FIRST_S
        first = True
        while True:
            pubsub = self._sub.pubsub()
            try:
                # Every open channel, the node's control channel last: its confirmation
                # means all of them are active again.
                await pubsub.subscribe(*(self._key(c) for c in self._subs), self._control)
                self._pubsub = pubsub
                awaiting_pong: float | None = None
                while True:
                    message = await pubsub.get_message(timeout=self.ping_interval_s)
                    if message is None:
                        if awaiting_pong is not None:
                            if loop.time() - awaiting_pong >= self.ping_interval_s:
                                raise OSError("Redis stopped answering pings")
                        else:
                            await pubsub.ping()
                            awaiting_pong = loop.time()
                        continue
                    awaiting_pong = None
                    kind = message["type"]
                    if kind == "message":
                        self._dispatch(self._name(message["channel"]), message["data"])
                    elif kind in ("subscribe", "unsubscribe"):
                        key = message["channel"]
                        self._confirmed(kind, key)
                        if kind == "subscribe" and key == self._control:
                            # Channels first subscribed while this connection was made.
                            missing = [
                                k for c in self._subs if (k := self._key(c)) not in pubsub.channels
                            ]
                            if missing:
                                await pubsub.subscribe(*missing)
                            backoff = RECONNECT_FIRST_S
                            self._connected.set()
                            if not first:
                                self.reconnects += 1
                                log.info("broker: reconnected to Redis")
                                await self._reconnected()
                            first = False
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a connection error, or anything else: start over
                if self._connected.is_set():
                    log.warning("broker: lost Redis (%r); reconnecting", e)
                self._connected.clear()
                self._pubsub = None
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(backoff)  # reconnection backoff
                backoff = min(backoff * 2, RECONNECT_MAX_S)

    # --- leases ------------------------------------------------------------------------------

    def _lease_key(self, resource: str) -> bytes:
        return self._key(f"_lease:{resource}")

    async def _script(self, script: str, key: bytes, *args: bytes | str | int) -> int:
        try:
            result = await self._cmd.eval(script, 1, key, *args)
        except _CONNECTION_ERRORS as e:
            raise BrokerUnavailable(f"lease command failed: {e}") from e
        return int(result)

    async def _try_acquire(self, resource: str, value: str, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return await self._script(_ACQUIRE, self._lease_key(resource), value, ms) == 1

    async def _renew(self, resource: str, value: str, ttl_s: float) -> bool:
        ms = max(1, int(ttl_s * 1000))
        return await self._script(_RENEW, self._lease_key(resource), value, ms) == 1

    async def _release(self, resource: str, value: str) -> None:
        free = self._key(_lease_free_channel(resource))
        await self._script(_RELEASE, self._lease_key(resource), value, free)

    async def _lease_value(self, resource: str) -> str | None:
        try:
            value = await self._cmd.get(self._lease_key(resource))
        except _CONNECTION_ERRORS as e:
            raise BrokerUnavailable(f"lease lookup failed: {e}") from e
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _expires_in(self, resource: str) -> float | None:
        try:
            ms = int(await self._cmd.pttl(self._lease_key(resource)))
        except _CONNECTION_ERRORS as e:
            raise BrokerUnavailable(f"lease lookup failed: {e}") from e
        return None if ms < 0 else ms / 1000


def broker_for(redis_url: str, prefix: str = "coview:") -> Broker:
    """The broker a deployment's settings ask for: Redis when a URL is set (not started)."""
    if redis_url:
        return RedisBroker(redis_url, prefix=prefix)
    return InProcessBroker()


# --- request/reply ---------------------------------------------------------------------------


def _frame(header: dict[str, Any], body: bytes) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def _unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise ValueError("no header")
    header = json.loads(head)
    if not isinstance(header, dict) or not isinstance(header.get("id"), str):
        raise ValueError("bad header")
    return header, body


Handler = Callable[[bytes], Awaitable[bytes]]


class Service:
    """Requests on one channel answered by a handler; :meth:`close` stops serving."""

    def __init__(self, rpc: Rpc, sub: Subscription, handler: Handler) -> None:
        self.channel = sub.channel
        self._rpc = rpc
        self._sub = sub
        self._handler = handler
        self._running: set[asyncio.Task[None]] = set()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        with contextlib.suppress(BrokerError):
            async for data in self._sub:
                try:
                    header, body = _unframe(data)
                    reply_to = header["reply_to"]
                    if not isinstance(reply_to, str) or not reply_to.startswith("_reply:"):
                        raise ValueError("bad reply_to")
                except (ValueError, KeyError) as e:
                    log.warning("broker: malformed request on %s dropped: %s", self.channel, e)
                    continue
                task = asyncio.get_running_loop().create_task(
                    self._answer(header["id"], reply_to, body)
                )
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _answer(self, request_id: str, reply_to: str, body: bytes) -> None:
        try:
            result = await self._handler(body)
            reply = _frame({"id": request_id, "ok": True}, result)
        except Exception as e:
            reply = _frame(
                {"id": request_id, "ok": False, "error": f"{type(e).__name__}: {e}"}, b""
            )
        with contextlib.suppress(BrokerError):
            await self._rpc.broker.publish(reply_to, reply)

    async def close(self) -> None:
        await self._sub.close()
        self._task.cancel()
        for task in [self._task, *self._running]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Rpc(_Lifecycle):
    """Request/reply on top of a :class:`Broker`.

    A request is published to a channel with this node's reply channel and an id; the
    handler :meth:`serve` runs for that channel publishes its answer there. Requests
    are at most once like every message: a request may time out although its handler ran.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.reply_channel = f"_reply:{broker.node_id}:{secrets.token_hex(4)}"
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._replies: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._services: set[Service] = set()

    async def start(self) -> None:
        self._replies = await self.broker.subscribe(self.reply_channel)
        self._task = asyncio.get_running_loop().create_task(self._read_replies(self._replies))

    async def _read_replies(self, replies: Subscription) -> None:
        with contextlib.suppress(BrokerError):
            async for data in replies:
                try:
                    header, body = _unframe(data)
                except ValueError:
                    continue
                fut = self._pending.pop(header["id"], None)
                if fut is None or fut.done():
                    continue  # answered late, after its timeout
                if header.get("ok") is True:
                    fut.set_result(body)
                else:
                    fut.set_exception(RemoteError(str(header.get("error", "failed"))))

    async def request(self, channel: str, body: bytes, timeout_s: float) -> bytes:
        """The reply to ``body`` sent on ``channel``; :class:`NoResponder` at once when
        nobody serves it, :class:`RequestTimeout` after ``timeout_s``, :class:`RemoteError`
        when the handler raised."""
        if self._replies is None:
            raise BrokerError("Rpc not started")
        request_id = secrets.token_hex(8)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            frame = _frame({"id": request_id, "reply_to": self.reply_channel}, body)
            if await self.broker.publish(channel, frame) == 0:
                raise NoResponder(channel)
            try:
                async with asyncio.timeout(timeout_s):
                    return await fut
            except TimeoutError:
                raise RequestTimeout(f"no reply on {channel} within {timeout_s} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def serve(self, channel: str, handler: Handler) -> Service:
        """Answer requests on ``channel`` with ``handler`` (each in its own task)."""
        service = Service(self, await self.broker.subscribe(channel), handler)
        self._services.add(service)
        return service

    async def close(self) -> None:
        for service in list(self._services):
            await service.close()
        self._services.clear()
        if self._replies is not None:
            await self._replies.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrokerUnavailable("rpc closed"))
        self._pending.clear()
