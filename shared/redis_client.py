"""Redis client factory: standalone or Redis Cluster, pinged with bounded retries."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

# Both clients expose the same command API; a service never needs to know
# which one it holds, except for pub/sub (see shared/pubsub.py).
RedisClient = redis.Redis | RedisCluster
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)


def create_redis(settings: Settings, **overrides: Any) -> RedisClient:
    """A standalone client, or a cluster client when CHAT_REDIS_CLUSTER_NODES is set."""
    if settings.cluster_mode:
        return create_cluster(settings)
    return create_standalone(settings, **overrides)


def create_cluster(settings: Settings) -> RedisCluster:
    nodes = []
    for item in settings.redis_cluster_nodes.split(","):
        host, _, port = item.strip().rpartition(":")
        nodes.append(ClusterNode(host or "127.0.0.1", int(port)))
    return RedisCluster(
        startup_nodes=nodes,
        decode_responses=False,
        socket_connect_timeout=2.0,
        max_connections=64,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
        ssl=settings.redis_cluster_tls,
        **settings.redis_options(),
    )


def create_standalone(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for commands and pub/sub; bytes in, bytes out.

    The pool blocks (up to a timeout) when all its connections are busy
    instead of failing at once: a burst of requests queues for a connection
    rather than turning into errors.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "health_check_interval": 10,
        "max_connections": 64,
        "timeout": 5,
    }
    options.update(settings.redis_options())  # the URL's own credentials and query win
    options.update(overrides)
    pool = redis.BlockingConnectionPool.from_url(settings.redis_url, **options)
    return redis.Redis(
        connection_pool=pool,
        decode_responses=False,
        retry=_retry(),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


async def wait_for_redis(client: RedisClient, attempts: int = 30, delay: float = 0.5) -> None:
    """Ping until Redis answers, a bounded number of times, then raise."""
    for attempt in range(1, attempts + 1):
        try:
            await client.ping()
            return
        except REDIS_ERRORS as exc:
            if attempt == attempts:
                raise
            log.warning("redis not reachable yet", attempt=attempt, error=str(exc))
            await asyncio.sleep(delay)


def text(value: object) -> str:
    """A Redis reply item as str (replies are bytes: decode_responses is off)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def publish_command(settings: Settings) -> str:
    """PUBLISH on standalone Redis, SPUBLISH (sharded pub/sub) on a cluster."""
    return "SPUBLISH" if settings.cluster_mode else "PUBLISH"
