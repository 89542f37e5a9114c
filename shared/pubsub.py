"""Channel subscribers: plain pub/sub on standalone Redis, sharded on a cluster.

A gateway receives pushes through one ``Subscriber``. ``subscribe`` returns
once Redis has confirmed the subscription, so nothing published after it
returns can be missed. ``on_reconnect`` runs after the subscriptions were
restored following a lost connection: pushes published meanwhile are gone,
and the caller tells its clients to resync.

On Redis Cluster, channels are sharded (SSUBSCRIBE / SPUBLISH): each lives on
the shard that owns its slot, so the subscriber keeps one connection per
master it needs and, when one fails (a failover), refreshes the topology and
moves that node's channels to their new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient

log = get_logger(__name__)

OnMessage = Callable[[bytes, bytes], None]
OnReconnect = Callable[[], None]
CONFIRM_TIMEOUT = 5.0


class Subscriber(Protocol):
    async def start(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def stop(self) -> None: ...


def create_subscriber(client: RedisClient) -> Subscriber:
    if isinstance(client, RedisCluster):
        return ShardedSubscriber(client)
    return StandaloneSubscriber(client)


class _Confirmations:
    """Futures resolved when Redis acknowledges a (s)subscribe."""

    def __init__(self) -> None:
        self._pending: dict[bytes, asyncio.Future[None]] = {}

    def expect(self, channel: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._pending[channel.encode()] = future
        return future

    def confirm(self, channel: bytes) -> None:
        future = self._pending.pop(channel, None)
        if future is not None and not future.done():
            future.set_result(None)

    def forget(self, channel: str) -> None:
        self._pending.pop(channel.encode(), None)


async def _read(
    pubsub: PubSub,
    on_message: OnMessage,
    confirmations: _Confirmations,
    on_error: Callable[[BaseException], Awaitable[bool]],
) -> None:
    """Read one pub/sub connection until cancelled or ``on_error`` says stop."""
    while True:
        try:
            message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
        except asyncio.CancelledError:
            raise
        except REDIS_ERRORS as exc:
            if not await on_error(exc):
                return
            continue
        if message is None:
            continue
        kind = message["type"]
        if kind in ("message", "smessage"):
            try:
                on_message(message["channel"], message["data"])
            except Exception:
                log.exception("push routing failed")
        elif kind in ("subscribe", "ssubscribe"):
            confirmations.confirm(message["channel"])


class StandaloneSubscriber:
    """One pub/sub connection; redis-py resubscribes it after a reconnect."""

    def __init__(self, client: redis.Redis) -> None:
        self._pubsub = client.pubsub()
        self._confirmations = _Confirmations()
        self._reader: asyncio.Task[None] | None = None
        self._on_reconnect: OnReconnect = lambda: None
        self._delay = 0.05

    async def start(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None:
        self._on_reconnect = on_reconnect
        await self._pubsub.connect()
        # Every later connect of this connection is a reconnect.
        assert self._pubsub.connection is not None
        self._pubsub.connection.register_connect_callback(self._reconnected)
        self._reader = asyncio.create_task(
            _read(self._pubsub, on_message, self._confirmations, self._backoff),
            name="pubsub-reader",
        )

    async def _reconnected(self, _connection: object) -> None:
        log.info("pub/sub reconnected; subscriptions restored")
        self._on_reconnect()

    async def _backoff(self, exc: BaseException) -> bool:
        log.warning("pub/sub connection lost; retrying", error=str(exc))
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)
        return True

    async def subscribe(self, channel: str) -> None:
        confirmed = self._confirmations.expect(channel)
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(confirmed, CONFIRM_TIMEOUT)
        finally:
            self._confirmations.forget(channel)

    async def unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.unsubscribe(channel)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.aclose()


class _NodeSubscription:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self.channels: set[str] = set()
        self.reader: asyncio.Task[None] | None = None


class ShardedSubscriber:
    """SSUBSCRIBE on the master that owns each channel's slot."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._nodes: dict[str, _NodeSubscription] = {}
        self._owner: dict[str, str] = {}
        self._confirmations = _Confirmations()
        self._on_message: OnMessage = lambda _c, _d: None
        self._on_reconnect: OnReconnect = lambda: None
        self._remapping: asyncio.Task[None] | None = None
        self._orphans: set[str] = set()
        self._lock = asyncio.Lock()

    async def start(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None:
        self._on_message = on_message
        self._on_reconnect = on_reconnect

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            await self._subscribe(channel)

    async def _subscribe(self, channel: str) -> None:
        node = self.cluster.get_node_from_key(channel)
        if node is None:
            raise RedisConnectionError(f"no cluster node owns the slot of {channel}")
        subscription = self._nodes.get(node.name)
        if subscription is None:
            subscription = _NodeSubscription(
                redis.Redis(host=node.host, port=int(node.port), socket_connect_timeout=2.0)
            )
            self._nodes[node.name] = subscription
            name = node.name

            async def failed(exc: BaseException) -> bool:
                log.warning("shard subscription lost", node=name, error=str(exc))
                self._schedule_remap(name)
                return False

            await subscription.pubsub.connect()
            subscription.reader = asyncio.create_task(
                _read(subscription.pubsub, self._on_message, self._confirmations, failed),
                name=f"shard-reader-{name}",
            )
        confirmed = self._confirmations.expect(channel)
        try:
            await subscription.pubsub.ssubscribe(channel)
            await asyncio.wait_for(confirmed, CONFIRM_TIMEOUT)
        finally:
            self._confirmations.forget(channel)
        subscription.channels.add(channel)
        self._owner[channel] = node.name

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._orphans.discard(channel)
            name = self._owner.pop(channel, None)
            subscription = self._nodes.get(name or "")
            if subscription is None:
                return
            subscription.channels.discard(channel)
            with contextlib.suppress(*REDIS_ERRORS):
                await subscription.pubsub.sunsubscribe(channel)

    def _schedule_remap(self, name: str) -> None:
        if self._remapping is None or self._remapping.done():
            self._remapping = asyncio.create_task(self._remap(name), name="shard-remap")

    async def _remap(self, failed_name: str) -> None:
        """Move every channel of a lost node to its current owner, then resync.

        Channels waiting to move are kept in ``_orphans`` until each one is
        subscribed again, so a failed attempt (the topology still names the
        dead master) loses none of them: the next attempt picks them up.
        """
        delay = 0.2
        while True:
            try:
                async with self._lock:
                    await self.cluster.nodes_manager.initialize()
                    lost = [
                        name
                        for name, sub in self._nodes.items()
                        if name == failed_name or sub.reader is None or sub.reader.done()
                    ]
                    for name in lost:
                        subscription = self._nodes.pop(name)
                        self._orphans |= subscription.channels
                        await _close(subscription)
                    for channel in sorted(self._orphans):
                        self._owner.pop(channel, None)
                        await self._subscribe(channel)
                        self._orphans.discard(channel)
                log.info("shard subscriptions moved")
                self._on_reconnect()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "shard remap failed; retrying", error=str(exc), waiting=len(self._orphans)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def stop(self) -> None:
        if self._remapping is not None:
            self._remapping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._remapping
        for subscription in self._nodes.values():
            await _close(subscription)
        self._nodes.clear()


async def _close(subscription: _NodeSubscription) -> None:
    if subscription.reader is not None and not subscription.reader.done():
        subscription.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await subscription.reader
    with contextlib.suppress(*REDIS_ERRORS):
        await subscription.pubsub.aclose()
    with contextlib.suppress(*REDIS_ERRORS):
        await subscription.client.aclose()
