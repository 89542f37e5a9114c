"""Presence state in Redis, changed only by the atomic scripts in shared/lua.

A user is online while their connection hash is non-empty. Opening the first
connection and closing the last are the transitions; each is reported by
the script that made it, so it is published exactly once per state change
(a redelivered event finds the state already changed and reports nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import keys
from shared.redis_client import RedisClient
from shared.scripts import load_script

TOMBSTONE_TTL_MS = 10 * 60 * 1000
LAST_SEEN_TTL_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Transition:
    user_id: str
    online: bool
    at: int
    name: str | None = None


class PresenceState:
    def __init__(self, redis_client: RedisClient) -> None:
        self.redis = redis_client
        self._open = load_script(redis_client, "presence_open")
        self._close = load_script(redis_client, "presence_close")

    async def open(self, user_id: str, connection_id: str, gateway_id: str) -> bool:
        """Record a connection; True when the user just came online."""
        result = await self._open(
            keys=[keys.user_connections_key(user_id), keys.user_tombstones_key(user_id)],
            args=[connection_id, gateway_id, TOMBSTONE_TTL_MS],
        )
        if int(result) == -1:
            return False
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.gateway_connections_key(gateway_id), connection_id, user_id)
        # Unconditional, so a crash between the script and here heals on redelivery.
        pipe.sadd(keys.online_users_key(), user_id)
        await pipe.execute()
        return int(result) == 1

    async def close(self, user_id: str, connection_id: str, gateway_id: str, at: int) -> bool:
        """Forget a connection; True when the user just went offline."""
        result = await self._close(
            keys=[
                keys.user_connections_key(user_id),
                keys.user_tombstones_key(user_id),
                keys.user_last_seen_key(user_id),
            ],
            args=[connection_id, at, TOMBSTONE_TTL_MS, gateway_id, LAST_SEEN_TTL_MS],
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(keys.gateway_connections_key(gateway_id), connection_id)
        if int(result) in (1, 2):
            pipe.srem(keys.online_users_key(), user_id)
        await pipe.execute()
        return int(result) == 1
