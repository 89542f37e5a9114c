"""Scripts in pipelines on a real Redis: no SCRIPT EXISTS per batch, and a
script cache emptied by a restart is refilled transparently."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from shared.scripts import execute, load_script, run_many


async def test_fanout_after_script_flush_publishes_once_per_channel(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    listener = redis.Redis.from_url(redis_server.url).pubsub()
    channels = [f"user:{uuid.uuid4().hex}" for _ in range(3)]
    try:
        await listener.subscribe(channels[0], channels[2])
        fanout = load_script(client, "fanout")
        await client.script_flush()  # as after a Redis restart
        before = await client.info("commandstats")
        results = await execute(
            client,
            [
                ("evalsha", (fanout.sha, 0, b"hi", *channels), {}),
                ("set", (f"k:{uuid.uuid4().hex}", b"1"), {}),
            ],
            [fanout],
        )
        assert results == [[1, 0, 1], True]
        stats = await client.info("commandstats")
        assert stats.get("cmdstat_script|exists") == before.get("cmdstat_script|exists")
        received = []
        deadline = asyncio.get_running_loop().time() + 5
        while len(received) < 2:
            assert asyncio.get_running_loop().time() < deadline, received
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                received.append((message["channel"], message["data"]))
        assert sorted(received) == sorted([(c.encode(), b"hi") for c in (channels[0], channels[2])])
        # The retry only re-ran the failed call: nothing was published twice.
        assert await listener.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    finally:
        await listener.aclose()
        await client.aclose()


async def test_run_many_raises_the_first_error(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    key = f"k:{uuid.uuid4().hex}"
    try:
        await client.set(key, b"not a stream")
        script = load_script(client, "fanout")
        assert await run_many(client, script, [([], [b"x", "c1"])]) == [[0]]
        with pytest.raises(ResponseError):
            await execute(client, [("xadd", (key, {b"f": b"v"}), {})], [script])
    finally:
        await client.aclose()


async def test_a_script_object_is_made_once_per_client(redis_server) -> None:
    # Making one hashes the source: the fan-out path asks for it every batch.
    first, second = redis.Redis.from_url(redis_server.url), redis.Redis.from_url(redis_server.url)
    try:
        assert load_script(first, "fanout") is load_script(first, "fanout")
        assert load_script(first, "fanout") is not load_script(second, "fanout")
        assert load_script(first, "fanout") is not load_script(first, "offline_enqueue")
    finally:
        await first.aclose()
        await second.aclose()
