"""Lua scripts live in ``shared/lua/*.lua``; each is loaded once and run by SHA.

redis-py's Script object retries with the body on NOSCRIPT, so a Redis
restart (script cache emptied) is handled transparently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from shared.redis_client import RedisClient

LUA_DIR = Path(__file__).with_name("lua")


@cache
def script_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def load_script(client: RedisClient, name: str) -> AsyncScript:
    return client.register_script(script_source(name))


async def run_many(
    client: RedisClient, script: AsyncScript, calls: Sequence[tuple[list[str], list[Any]]]
) -> list[Any]:
    """Run one script for many key sets: pipelined on standalone Redis.

    redis-py refuses scripts inside a cluster pipeline (keys may live on
    different nodes), so on a cluster the calls go out concurrently instead:
    still one round trip of latency, spread over the nodes' connections.
    """
    if not calls:
        return []
    if isinstance(client, RedisCluster):
        return list(await asyncio.gather(*(script(keys=k, args=a) for k, a in calls)))
    pipe = client.pipeline(transaction=False)
    for keys_, args in calls:
        await script(keys=keys_, args=args, client=cast(Any, pipe))
    return list(await pipe.execute())
