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

Entries are acknowledged only after their effects are done: the XACKs
travel in the same pipeline as a later read, so a batch costs one round trip
less. On standalone Redis the handler's effects (the fan-out pipeline, see
``Effects``) go out in that same write too, ahead of the XACKs of the
batches before it and the next read: one write and one wake-up of Redis per
batch instead of two. The batch's own XACKs wait for the replies of its
effects, so they go with the read after that; an effect Redis refused
(out of memory, say) leaves the batch pending instead of acknowledged. A
failed handler leaves its entries pending, and they are read again (``0``)
before anything new; XACKs that could not be sent are sent again with the
next read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis.exceptions import ResponseError

from shared.cancel import raise_if_cancelled
from shared.command_conn import CommandConnection
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.streams import (
    Before,
    Entry,
    RawEntries,
    Trimmer,
    ack_then_read,
    claim_all,
    ensure_group,
    stream_entries,
)

log = get_logger(__name__)


class Effects(Before, Protocol):
    """What a handled batch still has to send (``commands``, never empty; then ``settle``)."""

    async def flush(self) -> None:
        """Send the commands on a connection of their own and settle them."""


BatchHandler = Callable[[dict[str, Sequence[Entry]]], Awaitable[Effects | None]]

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
        self._unsent: _Unsent | None = None  # a batch's effects, to go out with the next read
        self._settled = asyncio.Event()  # no batch's effects are on their way out
        self._settled.set()
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
        await self._settled.wait()  # nor its effects on their way out

    def stop(self) -> None:
        self._stopping = True
        self._changed.set()

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            try:
                # The last batch's effects, then (once they are settled) its XACKs.
                while self._to_ack or self._unsent:
                    await self._send()
            except Exception as exc:
                # What stays unacknowledged is redone by the partition's next owner.
                log.warning("effects or XACKs not sent at stop", error=str(exc))
            if self.conn is not None:
                self.conn.close()

    async def _loop(self) -> None:
        delay = 0.05
        while not self._stopping:
            raise_if_cancelled()
            try:
                if not self._backlog:
                    if self._to_ack or self._unsent:
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
            async with asyncio.timeout(delay):
                await self._changed.wait()
        return min(delay * 2, 2.0)

    async def _send(self, read: dict[str, str] | None = None) -> Any:
        """The last batch's effects, the pending XACKs, then (``read``: stream ->
        start id) one XREADGROUP, in one write.

        Effects that fail (or are not answered) leave their batch unacknowledged:
        the caller's error handling reads it again (``0``) and redoes it.
        """
        unsent, self._unsent = self._unsent, None
        try:
            return await ack_then_read(
                self.client,
                self.conn,
                self.group,
                self.consumer,
                self._to_ack,
                read,
                self.batch_size,
                self.block_ms,
                unsent,
            )
        finally:
            self._settled.set()

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
                # Entries read again from our own pending list (``0``) would be
                # read once more by the next read, before their deferred XACKs:
                # their effects go out now, and the XACKs ahead of that read.
                await self._handle(owned, defer=all(ids[s] == ">" for s in owned))

    async def _handle(self, batch: dict[str, RawEntries], *, defer: bool = False) -> None:
        """Handle a batch; its effects are sent now, or (``defer``) with the next read."""
        entries = {stream: stream_entries(raw) for stream, raw in batch.items()}
        bodies: dict[str, Sequence[Entry]] = {s: e for s, e in entries.items() if e}
        ids = {stream: [entry_id for entry_id, _ in raw] for stream, raw in batch.items()}
        # Entries deleted while pending have no body: only acknowledged.
        effects = await self.handler(bodies) if bodies else None
        if effects is not None:
            if defer and self.conn is not None:
                self._unsent = _Unsent(effects, ids, self._to_ack, self._settled)
                self._settled.clear()
                return
            await effects.flush()
        _extend(self._to_ack, ids)


def _extend(to_ack: dict[str, list[bytes]], ids: dict[str, list[bytes]]) -> None:
    for stream, more in ids.items():
        to_ack.setdefault(stream, []).extend(more)


class _Unsent:
    """A batch's effects, sent ahead of the next read; then its entries are acknowledged."""

    __slots__ = ("effects", "ids", "settled", "to_ack")

    def __init__(
        self,
        effects: Effects,
        ids: dict[str, list[bytes]],
        to_ack: dict[str, list[bytes]],
        settled: asyncio.Event,
    ) -> None:
        self.effects = effects
        self.ids = ids
        self.to_ack = to_ack
        self.settled = settled

    @property
    def commands(self) -> Sequence[tuple[Any, ...]]:
        return self.effects.commands

    async def settle(self, replies: list[Any]) -> None:
        try:
            await self.effects.settle(replies)
        finally:
            self.settled.set()
        _extend(self.to_ack, self.ids)
