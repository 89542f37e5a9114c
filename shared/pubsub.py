"""Channel subscribers: plain pub/sub on standalone Redis, sharded on a cluster.

A gateway receives pushes through one ``Subscriber``. ``subscribe`` returns
once Redis has confirmed the subscription, so nothing published after it
returns can be missed. ``on_reconnect`` runs after the subscriptions were
restored following a lost connection: pushes published meanwhile are gone,
and the caller tells its clients to resync.

On Redis Cluster, channels are sharded (SSUBSCRIBE / SPUBLISH): each lives on
the shard that owns its slot, so the subscriber keeps one connection per
master it needs and, when one fails (a failover) or drops a channel whose slot
moved, refreshes the topology and moves those channels to their new owner.
The connections themselves are ``shared.pubsub_conn.PubSubConnection``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.cancel import raise_if_cancelled
from shared.logging import get_logger
from shared.pubsub_conn import Endpoint, OnEvent, OnMessage, PubSubConnection
from shared.redis_client import RedisClient

log = get_logger(__name__)

OnReconnect = OnEvent


class Subscriber(Protocol):
    async def start(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def stop(self) -> None: ...


def create_subscriber(client: RedisClient) -> Subscriber:
    if isinstance(client, RedisCluster):
        return ShardedSubscriber(client)
    return StandaloneSubscriber(client)


class StandaloneSubscriber:
    """One pub/sub connection that restores itself and its subscriptions."""

    def __init__(self, client: redis.Redis) -> None:
        self._endpoint = Endpoint.from_kwargs(
            {
                **client.connection_pool.connection_kwargs,
                "connection_class": client.connection_pool.connection_class,
            }
        )
        self._conn: PubSubConnection | None = None

    async def start(self, on_message: OnMessage, on_reconnect: OnReconnect) -> None:
        self._conn = PubSubConnection(self._endpoint, on_message, on_reconnect=on_reconnect)
        await self._conn.connect()

    async def subscribe(self, channel: str) -> None:
        assert self._conn is not None, "start() first"
        await self._conn.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        if self._conn is not None:
            self._conn.unsubscribe(channel)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()


class ShardedSubscriber:
    """SSUBSCRIBE on the master that owns each channel's slot."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._kwargs: dict[str, Any] = dict(getattr(cluster, "connection_kwargs", {}) or {})
        self._nodes: dict[str, PubSubConnection] = {}
        self._owner: dict[str, str] = {}
        self._on_message: OnMessage = lambda _c, _d: None
        self._on_reconnect: OnReconnect = lambda: None
        self._remapping: asyncio.Task[None] | None = None
        self._orphans: set[str] = set()
        self._lost: set[str] = set()
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
        connection = self._nodes.get(node.name)
        if connection is None or node.name in self._lost:
            name = node.name
            connection = PubSubConnection(
                Endpoint.from_kwargs(self._kwargs, host=node.host, port=int(node.port)),
                self._on_message,
                sharded=True,
                reconnect=False,
                on_lost=lambda: self._schedule_remap(name),
                on_moved=lambda channel: self._schedule_remap(name, channel.decode()),
            )
            await connection.connect()
            if node.name in self._nodes:
                self._orphans |= {c.decode() for c in self._nodes[node.name].channels}
                await self._nodes[node.name].close()
            self._lost.discard(node.name)
            self._nodes[node.name] = connection
        await connection.subscribe(channel)
        self._owner[channel] = node.name

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._orphans.discard(channel)
            name = self._owner.pop(channel, None)
            connection = self._nodes.get(name or "")
            if connection is not None:
                connection.unsubscribe(channel)

    def _schedule_remap(self, name: str, moved: str | None = None) -> None:
        if moved is None:
            self._lost.add(name)
        else:
            self._orphans.add(moved)
        if self._remapping is None or self._remapping.done():
            self._remapping = asyncio.create_task(self._remap(), name="shard-remap")

    async def _remap(self) -> None:
        """Move every channel of a lost node (or a moved slot) to its current owner, then resync.

        Channels waiting to move are kept in ``_orphans`` until each one is
        subscribed again, so a failed attempt (the topology still names the
        dead master) loses none of them: the next attempt picks them up.
        """
        delay = 0.2
        while True:
            # Retries for as long as the cluster is unreachable: a cancel at
            # stop that redis-py's wait_for lost must still end it (shared.cancel).
            raise_if_cancelled()
            try:
                async with self._lock:
                    await self.cluster.nodes_manager.initialize()
                    for name in list(self._lost):
                        connection = self._nodes.pop(name, None)
                        if connection is not None:
                            self._orphans |= {c.decode() for c in connection.channels}
                            await connection.close()
                        self._lost.discard(name)
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
        for connection in self._nodes.values():
            await connection.close()
        self._nodes.clear()
