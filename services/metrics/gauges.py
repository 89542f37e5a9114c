"""Cluster-wide gauges, refreshed in the background and served from memory.

A scrape never touches Redis: a loop refreshes the values every few seconds
with a bounded number of commands (per stream, per gateway, per window),
nothing proportional to the number of users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import ResponseError

from shared import keys
from shared.cancel import raise_if_cancelled
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.settings import Settings

log = get_logger(__name__)

WINDOWS = (1, 5, 60)


class ClusterGauges(Collector):
    def __init__(self, redis_client: RedisClient, settings: Settings) -> None:
        self.redis = redis_client
        self.settings = settings
        self.online = 0.0
        self.active: dict[int, float] = {}
        self.streams: dict[str, float] = {}
        self.groups: dict[tuple[str, str], tuple[float, float]] = {}
        self.gateways_alive = 0.0
        self.gateway_connections: dict[str, float] = {}
        self.offline_depth = 0.0
        self.refreshed_at = 0.0

    def streams_to_watch(self) -> list[str]:
        return [
            *(keys.command_stream(p) for p in range(self.settings.command_partitions)),
            keys.connection_event_stream(),
            keys.domain_event_stream(),
        ]

    async def run(self, interval: float = 5.0) -> None:
        while True:
            raise_if_cancelled()
            try:
                await self.refresh()
            except REDIS_ERRORS as exc:
                log.warning("gauge refresh failed", error=str(exc))
            await asyncio.sleep(interval)

    async def refresh(self) -> None:
        now = time.time()
        minute = int(now // 60)
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(keys.online_users_key())
        for window in WINDOWS:
            # The minute under way and the `window` whole minutes before it:
            # everyone active in the last `window` minutes is counted, and the
            # gauge does not fall towards zero every time a minute starts.
            pipe.pfcount(*(keys.active_users_key(minute - i) for i in range(window + 1)))
        pipe.get(keys.offline_depth_key())
        pipe.zrangebyscore(keys.gateways_key(), int(now * 1000), "+inf")
        replies = await pipe.execute()
        self.online = float(replies[0])
        self.active = {
            w: float(v) for w, v in zip(WINDOWS, replies[1 : 1 + len(WINDOWS)], strict=True)
        }
        # A queue that expires whole (retention) is not subtracted: clamp at 0.
        self.offline_depth = max(float(replies[1 + len(WINDOWS)] or 0), 0.0)
        alive = [g.decode() for g in replies[2 + len(WINDOWS)]]
        self.gateways_alive = float(len(alive))
        pipe = self.redis.pipeline(transaction=False)
        for gateway in alive:
            pipe.hlen(keys.gateway_connections_key(gateway))
        counts = await pipe.execute() if alive else []
        self.gateway_connections = {g: float(c) for g, c in zip(alive, counts, strict=True)}
        await self._refresh_streams()
        self.refreshed_at = now

    async def _refresh_streams(self) -> None:
        streams = self.streams_to_watch()
        pipe = self.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
        replies = await pipe.execute(raise_on_error=False)
        self.streams = {}
        self.groups = {}
        for index, stream in enumerate(streams):
            length, groups = replies[2 * index], replies[2 * index + 1]
            if isinstance(length, Exception):
                log.warning("stream length unavailable", stream=stream, error=str(length))
                continue
            self.streams[stream] = float(length)
            if isinstance(groups, Exception):
                # A stream nobody has written to yet does not exist: no groups, no
                # news. Any other error is, or the stream's gauges vanish unexplained.
                if not _no_such_key(groups):
                    log.warning("stream groups unavailable", stream=stream, error=str(groups))
                continue
            for group in groups:
                name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                lag = group.get("lag")
                self.groups[(stream, name)] = (
                    float(group.get("pending", 0)),
                    float(lag) if lag is not None else float("nan"),
                )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "chat_online_users", "Users with at least one live connection", value=self.online
        )
        active = GaugeMetricFamily(
            "chat_active_users",
            "Distinct users active in the last window minutes (whole minutes: up to one more)",
            labels=["window"],
        )
        for window, value in self.active.items():
            active.add_metric([f"{window}m"], value)
        yield active
        yield GaugeMetricFamily(
            "chat_gateways_alive", "Gateways with a live liveness entry", value=self.gateways_alive
        )
        per_gateway = GaugeMetricFamily(
            "chat_gateway_connections_registered",
            "Connections registered per gateway",
            labels=["gateway"],
        )
        for gateway, value in self.gateway_connections.items():
            per_gateway.add_metric([gateway], value)
        yield per_gateway
        length = GaugeMetricFamily(
            "chat_stream_length", "Entries in a Redis stream", labels=["stream"]
        )
        for stream, value in self.streams.items():
            length.add_metric([stream], value)
        yield length
        pending = GaugeMetricFamily(
            "chat_stream_group_pending",
            "Entries read but not acknowledged",
            labels=["stream", "group"],
        )
        lag = GaugeMetricFamily(
            "chat_stream_group_lag",
            "Entries not yet read by a consumer group",
            labels=["stream", "group"],
        )
        for (stream, group), (pending_count, lag_count) in self.groups.items():
            pending.add_metric([stream, group], pending_count)
            lag.add_metric([stream, group], lag_count)
        yield pending
        yield lag
        yield GaugeMetricFamily(
            "chat_offline_queue_depth",
            "Messages waiting in offline queues, all users",
            value=self.offline_depth,
        )
        yield GaugeMetricFamily(
            "chat_metrics_refreshed_timestamp_seconds",
            "When these gauges were last refreshed",
            value=self.refreshed_at,
        )


def _no_such_key(error: Exception) -> bool:
    return isinstance(error, ResponseError) and str(error).startswith("no such key")
