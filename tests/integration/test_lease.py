"""The lease scripts on a real Redis: only the holder renews or releases."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as redis

from shared.lease import Lease


async def test_only_the_holder_can_release_and_fences_grow(redis_server) -> None:
    client = redis.Redis.from_url(redis_server.url)
    resource = f"test:{uuid.uuid4().hex}"
    try:
        first = Lease(client, resource, ttl_ms=300, owner="a")
        second = Lease(client, resource, ttl_ms=300, owner="b")
        assert await first.acquire()
        fence_a = first.fence
        assert not await second.acquire()
        assert not await second.release()  # the seed's bug: b deleting a's lock
        assert await first.acquire()  # renewal keeps the same fence
        assert first.fence == fence_a
        # a's lease lapses; b takes over with a larger fencing token
        deadline = asyncio.get_running_loop().time() + 5
        while not await second.acquire():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert second.fence > fence_a
        assert not await first.release()  # a must not release b's lease
        assert not await first.acquire()
        assert await second.release()
        assert await first.acquire()
    finally:
        await client.aclose()
