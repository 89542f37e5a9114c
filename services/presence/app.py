"""Presence service: owns who is online, on which gateway, and last seen."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from services.presence.announce import Announcer
from services.presence.events import ConnectionEvents
from services.presence.state import PresenceState
from services.presence.sweep import GatewaySweeper
from shared import keys
from shared.command_conn import held_connection
from shared.logging import get_logger
from shared.mongo import create_mongo, database, mongo_ping
from shared.redis_client import create_redis, wait_for_redis
from shared.settings import Settings
from shared.streams import GroupConsumer
from shared.web import READY_CHECKS, REDIS, SETTINGS, base_app

log = get_logger(__name__)

# After a short batch of connection events, let the next ones gather for this
# long: a batch costs four round trips whatever its size (gateways alive,
# transitions, registry, publishes), and a burst of connects (a gateway's
# clients coming back after a restart) otherwise arrives a few events per
# batch. Watchers then see a transition up to this much later; a lone event
# still goes through as soon as the blocking read returns it.
EVENTS_LINGER_MS = 50


def create_app(settings: Settings) -> web.Application:
    app = base_app(settings, "presence", create_redis(settings))
    app.cleanup_ctx.append(_worker)
    return app


async def _worker(app: web.Application) -> AsyncIterator[None]:
    settings, redis_client = app[SETTINGS], app[REDIS]
    await wait_for_redis(redis_client)
    mongo = create_mongo(settings)
    app[READY_CHECKS].append(lambda: mongo_ping(mongo))
    # The event batches' scripts, writes and publishes go out on one held connection.
    conn = held_connection(redis_client)
    state = PresenceState(redis_client, conn)
    announcer = Announcer(redis_client, database(mongo, settings), settings, conn)
    announcer.start()
    consumer = GroupConsumer(
        redis_client,
        keys.connection_event_stream(),
        keys.PRESENCE_GROUP,
        settings.instance_id,
        ConnectionEvents(redis_client, state, announcer).handle,
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        reclaim_idle_ms=settings.reclaim_idle_ms,
        trim_seconds=settings.stream_trim_seconds,
        linger_ms=EVENTS_LINGER_MS,
    )
    sweeper = GatewaySweeper(redis_client, state, announcer, settings)
    tasks = [
        asyncio.create_task(consumer.run(), name="connection-events"),
        asyncio.create_task(sweeper.run(), name="gateway-sweeper"),
    ]
    log.info("presence started")
    yield
    consumer.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await announcer.stop()
    if conn is not None:
        conn.close()
    await mongo.close()
