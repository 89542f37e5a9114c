"""The stream consumer of presence, metrics and connection events on a real
Redis: a batch whose handler failed, for any reason, is redone before anything
new, long before the idle-entry reclaim would take it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared import keys
from shared.streams import Entry, GroupConsumer
from tests.support.chat import until


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("store down"),
        RedisConnectionError("connection lost"),  # Redis lost while the batch was handled
        ResponseError("OOM command not allowed"),
    ],
    ids=["handler", "redis-lost", "redis-refused"],
)
async def test_failed_batch_is_redone_first(redis_server, failure: Exception) -> None:
    client = redis.Redis.from_url(redis_server.url)
    stream = f"test:{uuid.uuid4().hex}"
    seen: list[bytes] = []
    failures = [failure]

    async def handler(entries: Sequence[Entry], recovered: bool) -> None:
        if failures:
            raise failures.pop()
        seen.extend(body for _, body in entries)

    # Reclaim of idle entries only after a minute: the redo must not rely on it.
    consumer = GroupConsumer(
        client, stream, "g", "c1", handler, block_ms=100, reclaim_idle_ms=60_000
    )
    for body in (b"m1", b"m2"):
        await client.xadd(stream, {keys.STREAM_FIELD: body})
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: seen == [b"m1", b"m2"], 5)
        pending = await client.xpending(stream, "g")
        deadline = asyncio.get_running_loop().time() + 5
        while pending["pending"]:
            assert asyncio.get_running_loop().time() < deadline, pending
            await asyncio.sleep(0.05)
            pending = await client.xpending(stream, "g")
    finally:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        await client.aclose()


async def test_acks_of_the_last_batch_are_sent_when_the_consumer_stops(redis_server) -> None:
    """XACKs ride with the next read; a consumer stopped right after a batch still sends them."""
    client = redis.Redis.from_url(redis_server.url)
    stream = f"test:{uuid.uuid4().hex}"
    seen: list[bytes] = []
    consumer: GroupConsumer

    async def handler(entries: Sequence[Entry], recovered: bool) -> None:
        seen.extend(body for _, body in entries)
        consumer.stop()  # no next read will carry this batch's XACK

    consumer = GroupConsumer(
        client, stream, "g", "c1", handler, block_ms=100, reclaim_idle_ms=60_000
    )
    for body in (b"m1", b"m2"):
        await client.xadd(stream, {keys.STREAM_FIELD: body})
    try:
        await asyncio.wait_for(consumer.run(), 5)
        assert seen == [b"m1", b"m2"]
        assert (await client.xpending(stream, "g"))["pending"] == 0
    finally:
        await client.aclose()


async def test_linger_gathers_a_burst_into_few_batches(client) -> None:
    """Presence lingers after a short batch: a burst trickling in (connects after a
    gateway restart) is handled in batches, in order, not an entry or two at a time."""
    stream = f"test:{uuid.uuid4().hex}"
    batches: list[list[bytes]] = []
    linger_ms = 100

    async def handler(entries: Sequence[Entry], recovered: bool) -> None:
        batches.append([body for _, body in entries])

    consumer = GroupConsumer(client, stream, "g", "c1", handler, block_ms=100, linger_ms=linger_ms)
    await client.xadd(stream, {keys.STREAM_FIELD: b"e0"})  # the group starts at the stream's start
    task = asyncio.create_task(consumer.run())
    try:
        await until(lambda: batches, 5)  # a lone entry is not held back
        loop = asyncio.get_running_loop()
        began = loop.time()
        for i in range(1, 61):
            await client.xadd(stream, {keys.STREAM_FIELD: f"e{i}".encode()})
            await asyncio.sleep(0.005)
        spread = loop.time() - began
        await until(lambda: sum(len(b) for b in batches) == 61, 5)
        assert [body for batch in batches for body in batch] == [
            f"e{i}".encode() for i in range(61)
        ]
        # One batch per linger while the burst lasts (and one either side).
        assert len(batches) <= spread / (linger_ms / 1000) + 3, [len(b) for b in batches]
    finally:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
