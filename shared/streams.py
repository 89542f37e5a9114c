"""Consumer-group plumbing for the Redis streams that carry work.

A consumer reads its own pending entries first (what it was handed before a
crash or a failed batch), then new ones; entries are XACKed only after the
handler returns, so a failure leaves them pending to be retried, and
XAUTOCLAIM hands entries of a dead consumer to a live one. The XACKs of a
handled batch travel in the same pipeline as the next read, on a connection
of the consumer's own (standalone Redis), so a batch costs one round trip
less and none of them queues for the shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
from prometheus_client import Counter
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from shared import keys
from shared.cancel import raise_if_cancelled
from shared.command_conn import CommandConnection, held_connection
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.scripts import load_script_with, run_many

log = get_logger(__name__)


def load_id_script(client: RedisClient, name: str) -> AsyncScript:
    """A script that compares stream entry ids: ``older(a, b)`` (``id_older.lua``)
    is defined ahead of it."""
    return load_script_with(client, name, "older", "id_older", "a, b")


Entry = tuple[bytes, bytes]  # (stream entry id, msgpack body)
T = TypeVar("T")


class Before(Protocol):
    """Commands that go out ahead of a read, in the same write, and their follow-up."""

    @property
    def commands(self) -> Sequence[tuple[Any, ...]]: ...

    async def settle(self, replies: list[Any]) -> None:
        """Act on the commands' replies (raise to fail the read with them)."""


TRIMMED = Counter(
    "chat_stream_trimmed_entries_total",
    "Stream entries removed once every consumer group was done with them",
    ["stream"],
)
UNDECODABLE = Counter(
    "chat_stream_undecodable_entries_total",
    "Stream entries skipped because their body could not be decoded",
    ["stream"],
)


def decode_entries(
    stream: str, entries: Sequence[Entry], decode: Callable[[bytes], T]
) -> list[tuple[bytes, T]]:
    """Decode every entry; one that cannot be read is logged, counted and skipped.

    Only our own services write these streams, so an unreadable body is a
    bug (or a version skew), not client input: retrying it would block the
    stream forever, and it is made visible instead of silently dropped.
    """
    decoded: list[tuple[bytes, T]] = []
    for entry_id, body in entries:
        try:
            decoded.append((entry_id, decode(body)))
        except msgspec.DecodeError:
            UNDECODABLE.labels(stream=stream).inc()
            log.error("undecodable stream entry skipped", stream=stream, entry=entry_id.decode())
    return decoded


BatchHandler = Callable[[Sequence[Entry], bool], Awaitable[None]]
RawEntries = list[tuple[bytes, dict[bytes, bytes] | None]]  # as XREADGROUP returns them


async def claim_all(
    client: RedisClient,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int,
    handle: Callable[[RawEntries], Awaitable[None]],
) -> int:
    """XAUTOCLAIM every entry idle for ``min_idle_ms`` to ``consumer``, ``handle`` each page."""
    total = 0
    cursor: bytes | str = "0-0"
    while True:
        result: Any = await client.xautoclaim(
            stream, group, consumer, min_idle_time=min_idle_ms, start_id=cursor, count=count
        )
        cursor, claimed = result[0], result[1]
        if claimed:
            total += len(claimed)
            await handle(claimed)
        if cursor in (b"0-0", "0-0") or not claimed:
            break
    if total:
        log.info("reclaimed stream entries", stream=stream, count=total)
    return total


async def ensure_group(client: RedisClient, stream: str, group: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) unless it exists."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def ack_then_read(
    client: RedisClient,
    conn: CommandConnection | None,
    group: str,
    consumer: str,
    to_ack: dict[str, list[bytes]],
    read: dict[str, str] | None,
    count: int,
    block_ms: int,
    before: Before | None = None,
) -> Any:
    """The XACKs in ``to_ack`` (stream -> ids), then one XREADGROUP, in one round trip.

    ``read`` maps streams to start ids; the read blocks up to ``block_ms``
    unless it is for own pending entries (``0``). ``to_ack`` is emptied, and
    refilled if the round trip failed, so the XACKs go with the next call.
    Returns the read's reply, or None without ``read``. ``conn``: the held
    connection to use (None: the client's pool, as on a cluster).

    ``before`` (held connection only): commands (at least one) that go first
    in the same write, and what to do with their replies, awaited as soon as
    they are in (before the read's reply). If it raises, so does this call.
    """
    acked = dict(to_ack)
    to_ack.clear()
    block = None
    if read:
        block = None if "0" in read.values() else block_ms
    try:
        if conn is not None:
            # Every round of a consumer: the words as they are on the held
            # connection, the reply unpacked here (no redis-py objects per read).
            commands: list[tuple[Any, ...]] = [
                ("XACK", stream, group, *ids) for stream, ids in acked.items()
            ]
            if read:
                commands.append(
                    (
                        "XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                        *(("BLOCK", block) if block is not None else ()),
                        "STREAMS", *read, *read.values(),
                    )
                )  # fmt: skip
            parts: list[tuple[Sequence[tuple[Any, ...]], float]] = []
            if before is not None:
                parts.append((before.commands, conn.timeout))
            if commands:
                parts.append((commands, conn.timeout + (block or 0) / 1000))
            if not parts:
                return None
            futures = await conn.start(parts)
            if before is not None:
                try:
                    await before.settle(await futures[0])
                except BaseException:
                    for later in futures[1:]:
                        # Answered later or failed with the connection: nobody waits.
                        later.add_done_callback(_discard)
                    raise
            replies = await futures[-1] if commands else []
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return read_reply(replies[-1]) if read else None
        assert before is None, "commands ahead of a read need the held connection"
        pipe = client.pipeline(transaction=False)
        for stream, ids in acked.items():
            pipe.xack(stream, group, *ids)
        if read:
            pipe.xreadgroup(group, consumer, read, count=count, block=block)  # type: ignore[arg-type]
        results = await pipe.execute()
    except BaseException:
        for stream, ids in acked.items():
            to_ack.setdefault(stream, []).extend(ids)
        raise
    return results[-1] if read else None


def _discard(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def xadd_words(stream: str, body: bytes, maxlen: int) -> tuple[Any, ...]:
    """XADD of one entry body to ``stream``, capped at about ``maxlen``, as its words."""
    return ("XADD", stream, "MAXLEN", "~", maxlen, "*", keys.STREAM_FIELD, body)


def read_reply(reply: Any) -> list[tuple[bytes, RawEntries]]:
    """An XREADGROUP reply as Redis sent it, shaped as redis-py returns it.

    RESP3 answers a map of stream -> entries, RESP2 a list of pairs; nothing
    new (the block expired) is a null. An entry is [id, [field, value, ...]],
    or [id, null] when it was deleted while pending.
    """
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [
        (name, [(entry_id, entry_fields(flat)) for entry_id, flat in entries])
        for name, entries in pairs
    ]


def entry_fields(fields: list[bytes] | dict[bytes, bytes] | None) -> dict[bytes, bytes]:
    """A stream entry's fields as Redis sent them ([field, value, ...]) or as
    redis-py's reply callback shaped them (a dict): a dict either way."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}


def stream_entries(raw: RawEntries) -> list[Entry]:
    # A deleted-but-pending entry comes back with no fields; skip its body.
    return [(entry_id, fields[keys.STREAM_FIELD]) for entry_id, fields in raw if fields]


def _ids(raw: RawEntries) -> list[bytes]:
    return [entry_id for entry_id, _ in raw]


class Trimmer:
    """Removes the entries of streams that every consumer group is done with.

    The MAXLEN caps bound a backlog while consumers are down; without more,
    entries already handled stay until a stream is full (a million per
    command partition: gigabytes of Redis memory in steady state). Every
    ``interval`` seconds (0: never) the consumers trim each stream below the
    oldest entry some group has not yet been given or not yet acknowledged
    (``trim_consumed.lua``). A failed trim is logged and tried again later:
    it only delays freeing memory.
    """

    def __init__(
        self, client: RedisClient, interval: float, conn: CommandConnection | None = None
    ) -> None:
        self.client = client
        self.interval = interval
        self.conn = conn  # the consumer's held connection, free between its reads
        self._next = 0.0

    async def maybe(self, streams: Sequence[str]) -> None:
        """Trim ``streams`` if ``interval`` has passed since the last trim."""
        if self.interval <= 0 or not streams:
            return
        now = asyncio.get_running_loop().time()
        if now < self._next:
            return
        self._next = now + self.interval
        script = load_id_script(self.client, "trim_consumed")
        try:
            calls: list[tuple[list[str], list[Any]]] = [([s], []) for s in streams]
            removed = await run_many(self.client, script, calls, self.conn)
        except (ResponseError, *REDIS_ERRORS) as exc:
            log.warning("stream trim failed", streams=list(streams), error=str(exc))
            return
        for stream, count in zip(streams, removed, strict=True):
            if count:
                TRIMMED.labels(stream=stream).inc(count)


class GroupConsumer:
    """Runs ``handler`` over batches of one stream for one consumer of a group."""

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        group: str,
        consumer: str,
        handler: BatchHandler,
        *,
        batch_size: int = 200,
        block_ms: int = 1000,
        reclaim_idle_ms: int = 30_000,
        linger_ms: int = 0,
        trim_seconds: float = 0,
        on_batch: Callable[[str, int], None] | None = None,
        on_reclaim: Callable[[str, int], None] | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        # For consumers nobody waits on (rollups): after a short batch, let
        # entries accumulate instead of paying three round trips per entry.
        self.linger_ms = linger_ms
        self._on_batch = on_batch
        self._on_reclaim = on_reclaim
        self._backlog = True  # read our own pending entries first
        self._stopping = asyncio.Event()
        self._to_ack: dict[str, list[bytes]] = {}  # handled, XACK not yet sent
        # Standalone Redis: reads and XACKs on a connection of our own, which
        # a blocking read may hold for block_ms without starving anybody.
        self.conn = held_connection(client)
        self._trimmer = Trimmer(client, trim_seconds, self.conn)

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Loop until stopped; store outages are retried with back-off."""
        try:
            await self._run()
        finally:
            if self.conn is not None:
                self.conn.close()  # drops a read still blocked on it
            if self._to_ack:
                # Best effort: what stays unacknowledged is redone by whoever
                # reclaims it, as after a crash.
                with contextlib.suppress(*REDIS_ERRORS):
                    await ack_then_read(
                        self.client, None, self.group, self.consumer, self._to_ack, None, 0, 0
                    )

    async def _run(self) -> None:
        delay = 0.05
        loop = asyncio.get_running_loop()
        next_reclaim = 0.0
        group_ready = False
        while not self._stopping.is_set():
            raise_if_cancelled()
            try:
                if not group_ready:
                    await ensure_group(self.client, self.stream, self.group)
                    group_ready = True
                if self.reclaim_idle_ms >= 0 and loop.time() >= next_reclaim:
                    await self.reclaim(self.reclaim_idle_ms)
                    next_reclaim = loop.time() + max(self.reclaim_idle_ms / 2000, 1.0)
                await self._trimmer.maybe([self.stream])
                read = await self.step()
                delay = 0.05
                if self.linger_ms and read < self.batch_size:
                    await self._backoff(self.linger_ms / 1000)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                self._backlog = True  # a failed batch is redone before anything new
                if "NOGROUP" in str(exc):
                    group_ready = False  # the stream was lost (Redis restarted empty)
                log.warning("stream consumer error", stream=self.stream, error=str(exc))
                delay = await self._backoff(delay)
            except REDIS_ERRORS as exc:
                self._backlog = True
                log.warning("redis unavailable", stream=self.stream, error=str(exc))
                delay = await self._backoff(delay)
            except Exception:
                self._backlog = True
                log.exception("batch handler failed; entries stay pending", stream=self.stream)
                delay = await self._backoff(delay)

    async def _backoff(self, delay: float) -> float:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        return min(delay * 2, 2.0)

    async def step(self) -> int:
        """Read one batch (own pending first, then new) and handle it; its size."""
        start_id = "0" if self._backlog else ">"
        response: Any = await ack_then_read(
            self.client,
            self.conn,
            self.group,
            self.consumer,
            self._to_ack,
            {self.stream: start_id},
            self.batch_size,
            self.block_ms,
        )
        raw = response[0][1] if response else []
        if self._backlog and not raw:
            self._backlog = False
            return self.batch_size  # go on with new entries at once
        if raw:
            await self._handle(raw, recovered=self._backlog)
        return len(raw)

    async def reclaim(self, min_idle_ms: int) -> int:
        """Take over entries idle for ``min_idle_ms`` in other consumers' lists."""
        total = await claim_all(
            self.client,
            self.stream,
            self.group,
            self.consumer,
            min_idle_ms,
            self.batch_size,
            lambda claimed: self._handle(claimed, recovered=True),
        )
        if total and self._on_reclaim:
            self._on_reclaim(self.stream, total)
        return total

    async def _handle(self, raw: RawEntries, recovered: bool) -> None:
        entries = stream_entries(raw)
        if entries:
            await self.handler(entries, recovered)
            if self._on_batch:
                self._on_batch(self.stream, len(entries))
        self._to_ack.setdefault(self.stream, []).extend(_ids(raw))
