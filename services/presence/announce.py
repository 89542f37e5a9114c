"""Publishes transitions on ``presence:<user>`` and records users in MongoDB."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from pymongo import UpdateOne

from services.presence import metrics
from services.presence.state import Transition
from shared import keys
from shared.logging import get_logger
from shared.mongo import USERS, MongoDB
from shared.protocol import PresenceUpdate, encode
from shared.redis_client import RedisClient, publish_command
from shared.settings import Settings

log = get_logger(__name__)


class Announcer:
    def __init__(self, redis_client: RedisClient, db: MongoDB, settings: Settings) -> None:
        self.redis = redis_client
        self.users = db[USERS]
        self._publish = publish_command(settings)

    async def announce(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        pipe = self.redis.pipeline(transaction=False)
        for t in transitions:
            status: Literal["online", "offline"] = "online" if t.online else "offline"
            metrics.TRANSITIONS.labels(status=status).inc()
            frame = PresenceUpdate(
                user_id=t.user_id,
                status=status,
                timestamp=t.at,
                last_seen=None if t.online else t.at,
            )
            pipe.execute_command(self._publish, keys.presence_channel(t.user_id), encode(frame))
        await pipe.execute()
        await self._record(transitions)

    async def _record(self, transitions: Sequence[Transition]) -> None:
        """Upsert users on coming online; write lastSeen on going offline."""
        ops: list[UpdateOne] = []
        for t in transitions:
            update: dict[str, Any]
            if t.online:
                update = {"$setOnInsert": {"createdAt": t.at}}
                if t.name is not None:
                    update["$set"] = {"name": t.name}
            else:
                update = {"$max": {"lastSeen": t.at}, "$setOnInsert": {"createdAt": t.at}}
            ops.append(UpdateOne({"_id": t.user_id}, update, upsert=True))
        try:
            await asyncio.wait_for(self.users.bulk_write(ops, ordered=False), timeout=10)
        except Exception as exc:
            # Redis keeps lastSeen too, so presence_state stays right; the
            # durable copy is retried on the user's next transition.
            metrics.LAST_SEEN_FAILURES.inc(len(ops))
            log.warning("recording users in MongoDB failed", error=str(exc), count=len(ops))
