"""The gateway's liveness entry: a deadline refreshed every third of the TTL.

The presence service reads the sorted set of deadlines; a gateway whose
deadline passed is considered dead and its connections are swept. If a
refresh finds the entry gone (the gateway was swept while Redis or this
process stalled, or Redis lost its data), the gateway announces its live
connections again so presence converges back to the truth.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from shared import keys
from shared.cancel import raise_if_cancelled
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient

log = get_logger(__name__)


async def refresh(redis_client: RedisClient, gateway_id: str, ttl_seconds: int) -> bool:
    """Move the deadline forward; True when the entry had to be created."""
    deadline_ms = int((time.time() + ttl_seconds) * 1000)
    return bool(await redis_client.zadd(keys.gateways_key(), {gateway_id: deadline_ms}))


async def liveness_loop(
    redis_client: RedisClient,
    gateway_id: str,
    ttl_seconds: int,
    reannounce: Callable[[], None],
) -> None:
    """Refresh forever; the first refresh must already have been done."""
    while True:
        raise_if_cancelled()
        await asyncio.sleep(ttl_seconds / 3)
        try:
            if await refresh(redis_client, gateway_id, ttl_seconds):
                log.warning("liveness entry was gone; announcing connections again")
                reannounce()
        except REDIS_ERRORS as exc:
            log.warning("liveness refresh failed", error=str(exc))


async def retire(redis_client: RedisClient, gateway_id: str) -> None:
    """Graceful exit: connections were closed and reported, so no sweep is needed."""
    await redis_client.zrem(keys.gateways_key(), gateway_id)
