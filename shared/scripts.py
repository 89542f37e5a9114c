"""Lua scripts live in ``shared/lua/*.lua``; each is loaded once and run by SHA.

redis-py's Script object retries with the body on NOSCRIPT, so a Redis
restart (script cache emptied) is handled transparently.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis.commands.core import AsyncScript

from shared.redis_client import RedisClient

LUA_DIR = Path(__file__).with_name("lua")


@cache
def script_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def load_script(client: RedisClient, name: str) -> AsyncScript:
    return client.register_script(script_source(name))
