"""One consumer-group reader for every command partition an instance owns.

Partitions exist so that delivery instances can share the work; within one
instance, reading each partition's stream with its own blocking XREADGROUP
would split the traffic into eight small batches, each paying its own round
trips (read, fan-out pipeline, XACK). On standalone Redis this reader names
all owned streams in one XREADGROUP (per-stream start ids: its own pending
entries, ``0``, until that backlog is empty, then new ones, ``>``) and hands
whatever came back to the handler as one batch. On Redis Cluster every
partition is its own slot, so the partition manager gives each partition a
reader of its own.

Entries are acknowledged only after the handler returned (its effects are
then durable): the XACKs travel in the same pipeline as the next read, so a
batch costs one round trip less. A failed handler leaves its entries pending,
and they are read again (``0``) before anything new; XACKs that could not be
sent are sent again with the next read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from shared.command_conn import CommandConnection
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.streams import (
    Entry,
    RawEntries,
    Trimmer,
    ack_then_read,
    claim_all,
    ensure_group,
    stream_entries,
)

log = get_logger(__name__)

BatchHandler = Callable[[dict[str, Sequence[Entry]]], Awaitable[None]]

# A blocked read does not see a partition added meanwhile: bound the wait. A
# partition changes hands only when a lease lapses or an instance joins or
# leaves (seconds), so a second more is small, while a shorter bound costs an
# idle worker a wake-up (and Redis a command) every bound.
MAX_BLOCK_MS = 1000


class PartitionReader:
    def __init__(
        self,
        client: RedisClient,
        group: str,
        consumer: str,
        handler: BatchHandler,
        *,
        batch_size: int,
        block_ms: int,
        trim_seconds: float = 0,
        on_reclaim: Callable[[int], None] | None = None,
        conn: CommandConnection | None = None,
    ) -> None:
        self.client = client
        self.conn = conn  # standalone Redis: reads and XACKs on this held connection
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch_size = batch_size
        self.block_ms = min(block_ms, MAX_BLOCK_MS)
        self._on_reclaim = on_reclaim
        self._trimmer = Trimmer(client, trim_seconds, conn)
        self._backlog: dict[str, bool] = {}  # owned stream -> still reading own pending
        self._changed = asyncio.Event()
        self._busy = asyncio.Lock()  # held while a batch is handled
        self._to_ack: dict[str, list[bytes]] = {}  # handled, XACK not yet sent
        self._stopping = False

    @property
    def streams(self) -> list[str]:
        return list(self._backlog)

    async def add(self, stream: str) -> None:
        """Own ``stream``: take over everything pending in its group, then read it."""
        await ensure_group(self.client, stream, self.group)
        async with self._busy:
            # The lease says the previous owner is gone: no idle threshold.
            total = await claim_all(
                self.client,
                stream,
                self.group,
                self.consumer,
                0,
                self.batch_size,
                lambda claimed: self._handle({stream: claimed}),
            )
            if total and self._on_reclaim:
                self._on_reclaim(total)
            self._backlog[stream] = True
        self._changed.set()

    async def remove(self, stream: str) -> None:
        """Stop reading ``stream``; returns once no batch of it is being handled."""
        self._backlog.pop(stream, None)
        async with self._busy:
            pass

    def stop(self) -> None:
        self._stopping = True
        self._changed.set()

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            if self._to_ack:
                with contextlib.suppress(*REDIS_ERRORS):
                    await self._send()
            if self.conn is not None:
                self.conn.close()

    async def _loop(self) -> None:
        delay = 0.05
        while not self._stopping:
            try:
                if not self._backlog:
                    if self._to_ack:
                        await self._send()
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                await self._trimmer.maybe(self.streams)
                await self.step()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                self._redo()
                if "NOGROUP" in str(exc):
                    # The stream was lost (Redis restarted empty): recreate the groups.
                    for stream in self.streams:
                        await ensure_group(self.client, stream, self.group)
                log.warning("partition read failed", error=str(exc))
                delay = await self._backoff(delay)
            except REDIS_ERRORS as exc:
                self._redo()
                log.warning("redis unavailable", error=str(exc))
                delay = await self._backoff(delay)
            except Exception:
                self._redo()
                log.exception("batch handler failed; entries stay pending")
                delay = await self._backoff(delay)

    def _redo(self) -> None:
        """After any failure (a Redis error included): our pending entries first."""
        for stream in self._backlog:
            self._backlog[stream] = True

    async def _backoff(self, delay: float) -> float:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=delay)
        return min(delay * 2, 2.0)

    async def _send(self, read: dict[str, str] | None = None) -> Any:
        """The pending XACKs, then (``read``: stream -> start id) one XREADGROUP."""
        return await ack_then_read(
            self.client,
            self.conn,
            self.group,
            self.consumer,
            self._to_ack,
            read,
            self.batch_size,
            self.block_ms,
        )

    async def step(self) -> None:
        """Acknowledge the last batch and read the next in one round trip; handle it."""
        ids = {stream: "0" if backlog else ">" for stream, backlog in self._backlog.items()}
        response = await self._send(ids)
        batch: dict[str, RawEntries] = {}
        for name, raw in response or []:
            stream = name.decode() if isinstance(name, bytes) else name
            if raw:
                batch[stream] = raw
        for stream, start in ids.items():
            if start == "0" and stream not in batch and stream in self._backlog:
                self._backlog[stream] = False
        async with self._busy:
            # A stream removed while the read was blocked is no longer ours:
            # its entries stay pending for the new owner to claim.
            owned = {s: raw for s, raw in batch.items() if s in self._backlog}
            if owned:
                await self._handle(owned)

    async def _handle(self, batch: dict[str, RawEntries]) -> None:
        entries = {stream: stream_entries(raw) for stream, raw in batch.items()}
        bodies: dict[str, Sequence[Entry]] = {s: e for s, e in entries.items() if e}
        if bodies:  # entries deleted while pending have no body: only acked
            await self.handler(bodies)
        for stream, raw in batch.items():
            self._to_ack.setdefault(stream, []).extend(entry_id for entry_id, _ in raw)
