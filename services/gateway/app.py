"""Gateway application factory: authenticates WebSockets and relays frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway import devtools, liveness, metrics
from services.gateway.appkeys import BACKLOG, CONN_EVENTS, HUB, LIMITER, RELAY, VERIFIER
from services.gateway.auth import TokenVerifier
from services.gateway.backlog import Backlog
from services.gateway.connevents import ConnectionEvents
from services.gateway.heartbeat import heartbeat_loop
from services.gateway.hub import Hub
from services.gateway.relay import StreamRelay
from services.gateway.session import drain, opened_event, websocket_handler
from shared.logging import get_logger
from shared.protocol import SyncRequired, encode
from shared.ratelimit import RateLimiter
from shared.redis_client import REDIS_ERRORS, create_redis, wait_for_redis
from shared.settings import Settings
from shared.web import REDIS, SETTINGS, base_app

log = get_logger(__name__)


def create_app(settings: Settings) -> web.Application:
    settings.require_jwt()
    app = base_app(settings, "gateway", create_redis(settings))
    app[VERIFIER] = TokenVerifier(settings)
    app.router.add_get("/ws", websocket_handler)
    devtools.add_routes(app)
    app.cleanup_ctx.append(_pipeline)
    app.on_shutdown.append(drain)
    return app


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    redis_client, conf = app[REDIS], app[SETTINGS]
    await wait_for_redis(redis_client)
    gateway_id = conf.instance_id
    hub = Hub(redis_client, gateway_id)
    metrics.SEND_BUFFER_BYTES.set_function(hub.buffered_bytes)
    # After a Redis outage pushes may have been dropped: tell every client to
    # close its gaps with `sync` (an empty list means every conversation).
    hub.on_resubscribed = lambda: hub.broadcast(encode(SyncRequired(conversation_ids=[])))
    await hub.start()
    limiter = RateLimiter(redis_client, conf)
    app[LIMITER] = limiter
    relay = StreamRelay(redis_client, limiter)
    relay.start()
    backlog = Backlog(
        redis_client,
        conf.command_partitions,
        conf.command_stream_maxlen,
        conf.event_stream_maxlen,
        relay.conn,
    )
    events = ConnectionEvents(relay, backlog, conf.event_stream_maxlen)
    backlog.on_refresh = events.flush
    metrics.HELD_CONN_EVENTS.set_function(lambda: len(events))
    await backlog.refresh()
    app[HUB] = hub
    app[RELAY] = relay
    app[BACKLOG] = backlog
    app[CONN_EVENTS] = events
    # Registered alive before the first connection is accepted, so presence
    # never takes this gateway's connection events for a dead gateway's.
    await liveness.refresh(redis_client, gateway_id, conf.gateway_ttl_seconds)

    def reannounce() -> None:
        for conn in list(hub.connections.values()):
            events.append(opened_event(hub.gateway_id, conn))

    beat = asyncio.create_task(
        liveness.liveness_loop(redis_client, gateway_id, conf.gateway_ttl_seconds, reannounce)
    )
    sweep = asyncio.create_task(
        heartbeat_loop(hub, conf.heartbeat_seconds, conf.idle_timeout_seconds)
    )
    watch_backlog = asyncio.create_task(backlog.run())
    log.info("gateway started", gateway=gateway_id)
    yield
    for task in (beat, sweep, watch_backlog):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if len(events):
        with contextlib.suppress(*REDIS_ERRORS):
            await backlog.refresh()  # sends what there is room for now
    await relay.stop()
    await hub.stop()
    if len(events):
        # Closes presence never heard of: left to its sweep of this gateway
        # once the liveness entry lapses, which closes them all.
        log.warning("connection events still held at stop", held=len(events))
        return
    with contextlib.suppress(*REDIS_ERRORS):
        await liveness.retire(redis_client, gateway_id)
