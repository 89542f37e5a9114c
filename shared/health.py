"""Health checks: the seed's deep Redis check, plus liveness and readiness.

``/health`` runs the deep check (pub/sub round trip, write and read latency,
Redis memory) and answers healthy/degraded (200) or unhealthy (503).
``/healthz`` only says the process serves HTTP. ``/readyz`` says the stores
answer and the process is not draining, which is what Kubernetes needs to
route traffic.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared import keys
from shared.logging import get_logger
from shared.pubsub import create_subscriber
from shared.redis_client import REDIS_ERRORS, RedisClient, publish_command
from shared.settings import Settings

log = get_logger(__name__)

PUBSUB_DEGRADED_MS = 200
WRITE_DEGRADED_MS = 100
READ_DEGRADED_MS = 50


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


async def pubsub_round_trip(client: RedisClient, settings: Settings, timeout: float = 2.0) -> float:
    """Publish on a private channel and wait for it to come back; ms, or -1."""
    channel = keys.health_probe_channel(settings.instance_id)
    token = str(time.perf_counter()).encode()
    arrived = asyncio.Event()

    def on_message(_channel: bytes, data: bytes) -> None:
        if data == token:
            arrived.set()

    subscriber = create_subscriber(client)
    try:
        await subscriber.start(on_message, lambda: None)
        await subscriber.subscribe(channel)
        start = time.perf_counter()
        await client.execute_command(publish_command(settings), channel, token)
        try:
            async with asyncio.timeout(timeout):
                await arrived.wait()
        except TimeoutError:
            return -1.0
        return _ms(start)
    finally:
        await subscriber.stop()


async def deep_redis_check(client: RedisClient, settings: Settings) -> dict[str, Any]:
    """The seed's deep check, returning status and details."""
    details: dict[str, Any] = {
        "pubSubLatency": -1,
        "writeLatency": -1,
        "readLatency": -1,
        "memoryUsage": {"used": -1, "peak": -1, "total": -1},
    }
    try:
        async with asyncio.timeout(4):
            details["pubSubLatency"] = await pubsub_round_trip(client, settings)
            key = keys.health_probe_key(settings.instance_id)
            start = time.perf_counter()
            await client.set(key, b"ok", ex=10)
            details["writeLatency"] = _ms(start)
            start = time.perf_counter()
            await client.get(key)
            details["readLatency"] = _ms(start)
            info = await client.info("memory")
            details["memoryUsage"] = {
                "used": int(info.get("used_memory", -1)),
                "peak": int(info.get("used_memory_peak", -1)),
                "total": int(info.get("total_system_memory", -1)),
            }
    except (*REDIS_ERRORS, TimeoutError) as exc:
        log.warning("redis health check failed", error=str(exc))
        return {"status": "unhealthy", **details}
    status = "healthy"
    if details["pubSubLatency"] < 0:
        status = "unhealthy"
    elif (
        details["pubSubLatency"] > PUBSUB_DEGRADED_MS
        or details["writeLatency"] > WRITE_DEGRADED_MS
        or details["readLatency"] > READ_DEGRADED_MS
    ):
        status = "degraded"
    return {"status": status, **details}
