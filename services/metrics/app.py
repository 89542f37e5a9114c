"""Metrics service: cluster-wide gauges that no single pod can see."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import REGISTRY

from services.metrics.gauges import ClusterGauges
from services.metrics.lost import LostEvents
from services.metrics.rollup import Rollup
from shared import keys
from shared.command_conn import held_connection
from shared.logging import get_logger
from shared.redis_client import create_redis, wait_for_redis
from shared.settings import Settings
from shared.streams import GroupConsumer
from shared.web import REDIS, SETTINGS, base_app

log = get_logger(__name__)

# Rollups are read by Prometheus every 15 s or so: a second of delay turns
# one read per domain event into one per second (each read wakes this
# process and Redis, and costs a pipeline: about 1 ms of CPU in all, which
# at 50 messages a second was a twentieth of the system's CPU with a 250 ms
# linger).
ROLLUP_LINGER_MS = 1000


def create_app(settings: Settings) -> web.Application:
    app = base_app(settings, "metrics", create_redis(settings))
    app.cleanup_ctx.append(_worker)
    return app


async def _worker(app: web.Application) -> AsyncIterator[None]:
    settings, redis_client = app[SETTINGS], app[REDIS]
    await wait_for_redis(redis_client)
    gauges = ClusterGauges(redis_client, settings)
    REGISTRY.register(gauges)
    lost = LostEvents(redis_client)
    await lost.check()  # before the consumer reads past a gap left while we were down
    # Each batch's rollup writes go out on one held connection.
    conn = held_connection(redis_client)
    consumer = GroupConsumer(
        redis_client,
        keys.domain_event_stream(),
        keys.METRICS_GROUP,
        settings.instance_id,
        Rollup(redis_client, conn).handle,
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        reclaim_idle_ms=settings.reclaim_idle_ms,
        trim_seconds=settings.stream_trim_seconds,
        linger_ms=ROLLUP_LINGER_MS,
    )
    tasks = [
        asyncio.create_task(consumer.run(), name="domain-events"),
        asyncio.create_task(gauges.run(settings.metrics_refresh_seconds), name="gauges"),
        asyncio.create_task(lost.run(settings.metrics_refresh_seconds), name="lost-events"),
    ]
    log.info("metrics started")
    yield
    consumer.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    REGISTRY.unregister(gauges)
    if conn is not None:
        conn.close()
