"""Scripts in pipelines on a real Redis: no SCRIPT EXISTS per batch, and a
script cache emptied by a restart is refilled transparently."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from shared.command_conn import CommandConnection
from shared.scripts import execute, execute_raw, load_script, run_many


@pytest.mark.parametrize("raw", [False, True], ids=["redis-py-ops", "raw-on-held-connection"])
async def test_fanout_after_script_flush_publishes_once_per_channel(redis_server, raw) -> None:
    client = redis.Redis.from_url(redis_server.url)
    listener = redis.Redis.from_url(redis_server.url).pubsub()
    channels = [f"user:{uuid.uuid4().hex}" for _ in range(3)]
    conn = CommandConnection(client)
    try:
        await listener.subscribe(channels[0], channels[2])
        fanout = load_script(client, "fanout")
        await client.script_flush()  # as after a Redis restart
        before = await client.info("commandstats")
        key = f"k:{uuid.uuid4().hex}"
        if raw:
            results = await execute_raw(
                client,
                [("EVALSHA", fanout.sha, 0, b"hi", *channels), ("SET", key, b"1")],
                [fanout],
                conn,
            )
            # As Redis sent them: no redis-py reply callback made the OK a bool.
            assert results == [[1, 0, 1], b"OK"]
        else:
            results = await execute(
                client,
                [
                    ("evalsha", (fanout.sha, 0, b"hi", *channels), {}),
                    ("set", (key, b"1"), {}),
                ],
                [fanout],
            )
            assert results == [[1, 0, 1], True]
        assert await client.get(key) == b"1"
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
        conn.close()
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
        conn = CommandConnection(client)
        try:
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await execute_raw(client, [("XADD", key, "*", b"f", b"v")], [script], conn)
        finally:
            conn.close()
    finally:
        await client.aclose()


async def test_a_script_object_is_made_once_per_client(redis_server) -> None:
    # Making one hashes the source: the fan-out path asks for it every batch.
    first, second = redis.Redis.from_url(redis_server.url), redis.Redis.from_url(redis_server.url)
    try:
        assert load_script(first, "fanout") is load_script(first, "fanout")
        assert load_script(first, "fanout") is not load_script(second, "fanout")
        assert load_script(first, "fanout") is not load_script(first, "queue_ack")
    finally:
        await first.aclose()
        await second.aclose()
