"""The HTTP surface every service shares: /health, /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from shared import gctune
from shared.health import deep_redis_check
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.settings import Settings

log = get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
SERVICE = web.AppKey("service", str)
DRAINING = web.AppKey("draining", asyncio.Event)
READY_CHECKS = web.AppKey("ready_checks", list)


def base_app(settings: Settings, service: str, redis_client: RedisClient) -> web.Application:
    """An application with the shared endpoints; the service adds its own."""
    app = web.Application(client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[REDIS] = redis_client
    app[SERVICE] = service
    app[DRAINING] = asyncio.Event()
    app[READY_CHECKS] = []
    app.router.add_get("/health", health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(disable_compression=True))
    app.on_cleanup.append(_close_redis)
    return app


async def _close_redis(app: web.Application) -> None:
    await app[REDIS].aclose()


async def health(request: web.Request) -> web.Response:
    app = request.app
    redis_health = await deep_redis_check(app[REDIS], app[SETTINGS])
    body: dict[str, Any] = {
        "status": redis_health["status"],
        "service": app[SERVICE],
        "instance": app[SETTINGS].instance_id,
        "redis": redis_health,
        "draining": app[DRAINING].is_set(),
        "timestamp": int(time.time() * 1000),
    }
    status = 503 if body["status"] == "unhealthy" else 200
    return web.json_response(body, status=status)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[DRAINING].is_set():
        return web.json_response({"ready": False, "reason": "draining"}, status=503)
    try:
        async with asyncio.timeout(2):
            await app[REDIS].ping()
            for check in app[READY_CHECKS]:
                if not await check():
                    return web.json_response({"ready": False, "reason": "store"}, status=503)
    except (*REDIS_ERRORS, TimeoutError) as exc:
        return web.json_response({"ready": False, "reason": str(exc)}, status=503)
    return web.json_response({"ready": True})


def run_service(app: web.Application, settings: Settings, port: int) -> None:
    """Run the app on uvloop; SIGTERM/SIGINT trigger the app's shutdown hooks."""
    import uvloop

    gctune.tune()
    app.on_startup.append(gctune.freeze_startup)  # after the service's own hooks
    web.run_app(
        app,
        host=settings.http_host,
        port=port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.drain_seconds + 5,
        backlog=settings.listen_backlog,
        loop=uvloop.new_event_loop(),
    )
