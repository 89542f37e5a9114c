"""Ownership of command partitions by delivery instances.

Each command partition is a stream with its own consumer-group reader. An
instance reads a partition only while it holds the partition's lease (a
token-checked Redis lease with a fencing token); live instances announce
themselves in a sorted set and each takes at most its fair share
(ceil(partitions / instances)), releasing surplus leases so that a new
instance gets work. Because one owner handles a conversation at a time it
can keep that conversation's seq counter in memory; the unique
(conversationId, seq) index in MongoDB still arbitrates if two ever race
(a paused owner whose lease lapsed).

When an instance acquires a partition it first takes over every pending
entry of the partition's group (XAUTOCLAIM with no idle threshold: the lease
says the previous owner is gone), so the entries of a crashed owner are
redone within one lease TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from services.delivery import metrics
from shared import keys
from shared.lease import Lease
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.settings import Settings
from shared.streams import Entry, GroupConsumer, ensure_group

log = get_logger(__name__)

Handler = Callable[[str, Sequence[Entry]], Awaitable[None]]


class PartitionManager:
    def __init__(
        self,
        redis_client: RedisClient,
        settings: Settings,
        handler: Handler,
        on_acquire: Callable[[int], None] | None = None,
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.handler = handler
        self.on_acquire = on_acquire
        self.instance = settings.instance_id
        self.leases = {
            p: Lease(redis_client, keys.partition_resource(p), settings.lease_ttl_ms, self.instance)
            for p in range(settings.command_partitions)
        }
        self.readers: dict[int, tuple[GroupConsumer, asyncio.Task[None]]] = {}

    @property
    def owned(self) -> list[int]:
        return sorted(self.readers)

    async def run(self) -> None:
        interval = self.settings.lease_ttl_ms / 3000
        while True:
            try:
                await self.rebalance()
            except REDIS_ERRORS as exc:
                log.warning("partition rebalance failed", error=str(exc))
            await asyncio.sleep(interval)

    async def rebalance(self) -> None:
        now_ms = int(time.time() * 1000)
        registry = keys.delivery_instances_key()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(registry, {self.instance: now_ms + self.settings.lease_ttl_ms})
        pipe.zremrangebyscore(registry, "-inf", now_ms)
        pipe.zcard(registry)
        _, _, alive = await pipe.execute()
        share = math.ceil(self.settings.command_partitions / max(int(alive), 1))
        # Renew what we hold; drop what we lost.
        for partition in list(self.readers):
            if not await self.leases[partition].acquire():
                log.warning("lost partition lease", partition=partition)
                await self._stop_reader(partition)
        # Give back surplus, newest first, so another instance can take it.
        while len(self.readers) > share:
            partition = max(self.readers)
            await self._stop_reader(partition)
            await self.leases[partition].release()
        # Take free partitions up to our share, starting at an instance-specific
        # offset so that instances do not all contend for partition 0.
        count = self.settings.command_partitions
        offset = hash(self.instance) % count
        for i in range(count):
            if len(self.readers) >= share:
                break
            partition = (offset + i) % count
            if partition in self.readers:
                continue
            if await self.leases[partition].acquire():
                await self._start_reader(partition)
        metrics.PARTITIONS_OWNED.set(len(self.readers))

    async def _start_reader(self, partition: int) -> None:
        stream = keys.command_stream(partition)

        async def handle(entries: Sequence[Entry], recovered: bool) -> None:
            await self.handler(stream, entries)

        consumer = GroupConsumer(
            self.redis,
            stream,
            keys.DELIVERY_GROUP,
            self.instance,
            handle,
            batch_size=self.settings.batch_size,
            block_ms=self.settings.block_ms,
            reclaim_idle_ms=-1,  # the lease decides; see below
            on_reclaim=lambda _s, n: metrics.RECLAIMED.inc(n),
        )
        if self.on_acquire:
            self.on_acquire(partition)

        async def read() -> None:
            # Everything pending in the group belongs to a previous owner (or
            # to this instance before a restart): take it over before new work.
            while True:
                try:
                    await ensure_group(self.redis, stream, keys.DELIVERY_GROUP)
                    await consumer.reclaim(0)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("takeover failed; retrying", partition=partition, error=str(exc))
                    await asyncio.sleep(0.5)
            await consumer.run()

        task = asyncio.create_task(read(), name=f"partition-{partition}")
        self.readers[partition] = (consumer, task)
        log.info("partition acquired", partition=partition, fence=self.leases[partition].fence)

    async def _stop_reader(self, partition: int) -> None:
        consumer, task = self.readers.pop(partition)
        consumer.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.settings.block_ms / 1000 + 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        for partition in list(self.readers):
            await self._stop_reader(partition)
            with contextlib.suppress(*REDIS_ERRORS):
                await self.leases[partition].release()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.zrem(keys.delivery_instances_key(), self.instance)
