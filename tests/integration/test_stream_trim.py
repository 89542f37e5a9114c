"""Consumed stream entries are trimmed, and nothing a consumer group still
needs (undelivered, or delivered and not acknowledged) ever is."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import redis.asyncio as redis

from shared import keys
from shared.settings import Settings
from shared.streams import Entry, GroupConsumer, Trimmer
from tests.support.chat import create_conversation, send, uid, until
from tests.support.client import ChatClient

NODE = 100  # Redis's stream-node-max-entries: an approximate trim removes whole nodes


async def _fill(client: redis.Redis, stream: str, count: int) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {keys.STREAM_FIELD: b"%d" % i})
    return list(await pipe.execute())


async def _take(client: redis.Redis, stream: str, group: str, count: int, ack: int) -> None:
    """Group ``group`` is given the next ``count`` entries and acknowledges the first ``ack``."""
    reply = await client.xreadgroup(group, "c", {stream: ">"}, count=count)
    ids = [entry_id for entry_id, _ in reply[0][1]]
    if ack:
        await client.xack(stream, group, *ids[:ack])


async def _trim(client: redis.Redis, stream: str) -> None:
    await Trimmer(client, interval=1).maybe([stream])


async def _kept_from(client: redis.Redis, stream: str, first: bytes) -> int:
    return len(await client.xrange(stream, min=first))


async def test_only_what_every_group_is_done_with_is_trimmed(client: redis.Redis) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    ids = await _fill(client, stream, 10 * NODE)
    for group in ("a", "b"):
        await client.xgroup_create(stream, group, id="0")
    # a was given entries 0..349 and acknowledged 0..199: 200..349 are pending.
    await _take(client, stream, "a", 3 * NODE + NODE // 2, ack=2 * NODE)
    await _take(client, stream, "b", 3 * NODE, ack=3 * NODE)  # 300.. not given to b yet
    await _trim(client, stream)
    assert await _kept_from(client, stream, ids[2 * NODE]) == 8 * NODE
    assert await client.xlen(stream) == 8 * NODE  # the two nodes before went

    await _take(client, stream, "b", 7 * NODE, ack=7 * NODE)  # b is done with everything
    await _trim(client, stream)
    # a's oldest pending entry holds the line, though a was given more after it.
    assert await _kept_from(client, stream, ids[2 * NODE]) == 8 * NODE
    # What a crashed member of a left pending can still be claimed, bodies included.
    _, claimed, _ = await client.xautoclaim(stream, "a", "rescuer", 0, "0-0", count=2 * NODE)
    assert [body[keys.STREAM_FIELD] for _, body in claimed] == [
        b"%d" % i for i in range(2 * NODE, 3 * NODE + NODE // 2)
    ]

    await client.xack(stream, "a", *[entry_id for entry_id, _ in claimed])
    await _take(client, stream, "a", 10 * NODE, ack=10 * NODE)
    await _trim(client, stream)
    assert await client.xlen(stream) <= NODE  # all consumed: only the last node is left


async def test_a_group_that_read_nothing_keeps_everything(client: redis.Redis) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    await _fill(client, stream, 5 * NODE)
    await client.xgroup_create(stream, "a", id="0")
    await client.xgroup_create(stream, "late", id="0")
    await _take(client, stream, "a", 5 * NODE, ack=5 * NODE)
    await _trim(client, stream)
    assert await client.xlen(stream) == 5 * NODE
    # No group at all: the stream is left to its MAXLEN cap.
    bare = f"test:{uuid.uuid4().hex}"
    await _fill(client, bare, 3 * NODE)
    await _trim(client, bare)
    assert await client.xlen(bare) == 3 * NODE


async def test_a_consumer_trims_what_it_handled(client: redis.Redis) -> None:
    stream = f"test:{uuid.uuid4().hex}"
    seen: list[bytes] = []

    async def handler(entries: Sequence[Entry], recovered: bool) -> None:
        seen.extend(body for _, body in entries)

    consumer = GroupConsumer(client, stream, "g", "c1", handler, block_ms=100, trim_seconds=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        await _fill(client, stream, 5 * NODE)
        await until(lambda: len(seen) == 5 * NODE, 10)

        async def trimmed() -> bool:
            return int(await client.xlen(stream)) <= NODE

        deadline = asyncio.get_running_loop().time() + 10
        while not await trimmed():
            assert asyncio.get_running_loop().time() < deadline, await client.xlen(stream)
            await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    assert seen == [b"%d" % i for i in range(5 * NODE)]


async def test_delivery_trims_its_command_partitions(fresh_stack) -> None:
    """Every message acked and pushed, and the partition does not keep them all."""
    fresh_stack.overrides["CHAT_STREAM_TRIM_SECONDS"] = "0.2"
    gateway = fresh_stack.start_all()["gateway"]
    alice, bob = uid("alice"), uid("bob")
    a = await ChatClient.connect(gateway.ws_url, alice)
    b = await ChatClient.connect(gateway.ws_url, bob)
    try:
        conversation = await create_conversation(a, bob)
        total = 3 * NODE
        for i in range(total):
            ack = await send(a, conversation["id"], f"m{i}")
            assert ack["type"] == "message_ack", ack
        for i in range(total):
            assert (await b.expect("message"))["message"]["seq"] == i + 1
        client = redis.Redis.from_url(fresh_stack.redis_url)
        try:
            partitions = Settings().command_partitions
            streams = [keys.command_stream(p) for p in range(partitions)]

            async def lengths() -> int:
                return sum([int(await client.xlen(s)) for s in streams])

            deadline = asyncio.get_running_loop().time() + 10
            while await lengths() >= total:
                assert asyncio.get_running_loop().time() < deadline, await lengths()
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
    finally:
        await a.close()
        await b.close()
