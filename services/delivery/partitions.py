"""Ownership of command partitions by delivery instances.

Each command partition is a stream read through the consumer group of
delivery (see ``reader``: one reader for all owned partitions on standalone
Redis, one per partition on a cluster). An instance reads a partition only
while it holds the partition's lease (a
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
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster

from services.delivery import metrics
from services.delivery.reader import BatchHandler, PartitionReader
from shared import keys
from shared.cancel import raise_if_cancelled
from shared.command_conn import held_connection
from shared.lease import Lease
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.settings import Settings

log = get_logger(__name__)


class PartitionManager:
    def __init__(
        self,
        redis_client: RedisClient,
        settings: Settings,
        handler: BatchHandler,
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
        # Standalone Redis: one reader for every owned partition (one
        # XREADGROUP and one batch for all). A cluster cannot read streams of
        # different slots in one command: one reader per partition there.
        self._shared_reader = not isinstance(redis_client, RedisCluster)
        self.readers: dict[int, tuple[PartitionReader, asyncio.Task[None]]] = {}
        self._owned: set[int] = set()
        # stop() runs while the rebalance loop may still: it waits for a pass
        # under way, and no pass starts after it, or a partition it released
        # would be taken again (its last batch redone, its lease held past us).
        self._stopping = False
        self._rebalancing = asyncio.Lock()

    @property
    def owned(self) -> list[int]:
        return sorted(self._owned)

    def _new_reader(self) -> tuple[PartitionReader, asyncio.Task[None]]:
        reader = PartitionReader(
            self.redis,
            keys.DELIVERY_GROUP,
            self.instance,
            self.handler,
            batch_size=self.settings.batch_size,
            block_ms=self.settings.block_ms,
            trim_seconds=self.settings.stream_trim_seconds,
            on_reclaim=metrics.RECLAIMED.inc,
            conn=held_connection(self.redis),
        )
        return reader, asyncio.create_task(reader.run(), name="partition-reader")

    def _slot(self, partition: int) -> int:
        return 0 if self._shared_reader else partition

    def _reader_for(self, partition: int) -> PartitionReader:
        slot = self._slot(partition)
        if slot not in self.readers:
            self.readers[slot] = self._new_reader()
        return self.readers[slot][0]

    async def run(self) -> None:
        interval = self.settings.lease_ttl_ms / 3000
        while not self._stopping:
            raise_if_cancelled()
            try:
                await self.rebalance()
            except REDIS_ERRORS as exc:
                log.warning("partition rebalance failed", error=str(exc))
            await asyncio.sleep(interval)

    async def rebalance(self) -> None:
        async with self._rebalancing:
            if not self._stopping:
                await self._rebalance()

    async def _rebalance(self) -> None:
        now_ms = int(time.time() * 1000)
        registry = keys.delivery_instances_key()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(registry, {self.instance: now_ms + self.settings.lease_ttl_ms})
        pipe.zremrangebyscore(registry, "-inf", now_ms)
        pipe.zcard(registry)
        _, _, alive = await pipe.execute()
        share = math.ceil(self.settings.command_partitions / max(int(alive), 1))
        # Renew what we hold; drop what we lost.
        for partition in self.owned:
            if not await self.leases[partition].acquire():
                log.warning("lost partition lease", partition=partition)
                await self._stop_reading(partition)
        # Give back surplus, newest first, so another instance can take it.
        while len(self._owned) > share:
            partition = max(self._owned)
            await self._stop_reading(partition)
            await self.leases[partition].release()
        # Take free partitions up to our share, starting at an instance-specific
        # offset so that instances do not all contend for partition 0.
        count = self.settings.command_partitions
        offset = hash(self.instance) % count
        for i in range(count):
            if len(self._owned) >= share:
                break
            partition = (offset + i) % count
            if partition in self._owned:
                continue
            if await self.leases[partition].acquire():
                await self._start_reading(partition)
        metrics.PARTITIONS_OWNED.set(len(self._owned))

    async def _start_reading(self, partition: int) -> None:
        if self.on_acquire:
            self.on_acquire(partition)
        reader = self._reader_for(partition)
        # Everything pending in the group belongs to a previous owner (or to
        # this instance before a restart): the reader takes it over first.
        try:
            await reader.add(keys.command_stream(partition))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Retrying here would stall the renewal of every other lease this
            # instance holds: give the partition back; the next rebalance (or
            # another instance) takes it over again, pending entries included.
            log.warning(
                "takeover failed; partition given back", partition=partition, error=str(exc)
            )
            if not self._shared_reader:
                await self._close_reader(self._slot(partition))
            with contextlib.suppress(*REDIS_ERRORS):
                await self.leases[partition].release()
            return
        self._owned.add(partition)
        log.info("partition acquired", partition=partition, fence=self.leases[partition].fence)

    async def _stop_reading(self, partition: int) -> None:
        self._owned.discard(partition)
        slot = self._slot(partition)
        if slot not in self.readers:
            return
        reader = self.readers[slot][0]
        try:
            async with asyncio.timeout(self.settings.block_ms / 1000 + 5):
                await reader.remove(keys.command_stream(partition))
        except TimeoutError:
            log.warning("partition batch still running at release", partition=partition)
        if not self._shared_reader:
            await self._close_reader(slot)

    async def _close_reader(self, slot: int) -> None:
        reader, task = self.readers.pop(slot)
        reader.stop()
        try:
            async with asyncio.timeout(self.settings.block_ms / 1000 + 5):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        self._stopping = True
        async with self._rebalancing:
            await self._release_all()

    async def _release_all(self) -> None:
        for partition in self.owned:
            await self._stop_reading(partition)
            with contextlib.suppress(*REDIS_ERRORS):
                await self.leases[partition].release()
        for slot in list(self.readers):
            await self._close_reader(slot)
        with contextlib.suppress(*REDIS_ERRORS):
            await self.redis.zrem(keys.delivery_instances_key(), self.instance)
