"""Sweeps gateways whose liveness lapsed, so their users converge to offline.

Every presence instance looks for lapsed gateways every third of the
liveness TTL; exactly one sweeps a given gateway, the holder of its lease.
A user goes offline at most TTL + TTL/3 after their gateway's last refresh
(plus the sweep itself), inside the 2 x TTL bound.
"""

from __future__ import annotations

import asyncio
import time

from services.presence import metrics
from services.presence.announce import Announcer
from services.presence.state import Change, PresenceState, Transition
from shared import keys
from shared.cancel import raise_if_cancelled
from shared.lease import Lease
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient, text
from shared.settings import Settings

log = get_logger(__name__)

SWEEP_CHUNK = 500


class GatewaySweeper:
    def __init__(
        self,
        redis_client: RedisClient,
        state: PresenceState,
        announcer: Announcer,
        settings: Settings,
    ) -> None:
        self.redis = redis_client
        self.state = state
        self.announcer = announcer
        self.settings = settings

    async def run(self) -> None:
        interval = self.settings.gateway_ttl_seconds / 3
        while True:
            raise_if_cancelled()
            try:
                await self.sweep_lapsed()
            except REDIS_ERRORS as exc:
                log.warning("sweep failed", error=str(exc))
            await asyncio.sleep(interval)

    async def sweep_lapsed(self) -> int:
        now_ms = int(time.time() * 1000)
        dead = await self.redis.zrangebyscore(keys.gateways_key(), "-inf", now_ms)
        swept = 0
        for raw in dead:
            gateway_id = text(raw)
            lease = Lease(
                self.redis,
                f"sweep:{gateway_id}",
                ttl_ms=60_000,
                owner=self.settings.instance_id,
            )
            if not await lease.acquire():
                continue  # another presence instance is sweeping it
            try:
                await self.sweep(gateway_id)
                swept += 1
            finally:
                await lease.release()
        return swept

    async def sweep(self, gateway_id: str) -> None:
        start = time.perf_counter()
        key = keys.gateway_connections_key(gateway_id)
        at = int(time.time() * 1000)
        removed = 0
        cursor = 0
        while True:
            # HSCAN over one dead gateway's own hash, not the keyspace.
            cursor, chunk = await self.redis.hscan(key, cursor, count=SWEEP_CHUNK)
            assert isinstance(chunk, dict)
            changes = [
                Change(text(user), text(conn), gateway_id, False, at, for_good=False)
                for conn, user in chunk.items()
            ]
            made = await self.state.apply(changes)
            offline = {c.user_id for c, gone in zip(changes, made, strict=True) if gone}
            removed += len(changes)
            await self.announcer.announce([Transition(user, False, at) for user in sorted(offline)])
            if cursor == 0:
                break
        # Remove the gateway only if it did not come back meanwhile.
        score = await self.redis.zscore(keys.gateways_key(), gateway_id)
        if score is not None and score <= time.time() * 1000:
            await self.redis.zrem(keys.gateways_key(), gateway_id)
            await self.redis.delete(key)
        metrics.SWEEPS.inc()
        metrics.SWEPT_CONNECTIONS.inc(removed)
        metrics.SWEEP_SECONDS.observe(time.perf_counter() - start)
        log.info("gateway swept", gateway=gateway_id, connections=removed)
