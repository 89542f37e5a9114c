"""Publishes transitions on ``presence:<user>`` and records users in MongoDB.

Publishing is immediate (watchers see a transition as soon as the script
made it). The MongoDB side (users upserted with their name when they come
online, ``lastSeen`` written when they go offline) goes through a background
writer that coalesces per user and writes in bulk: presence must not wait on
the database, and a sweep of a gateway with ten thousand users would
otherwise spend seconds in upserts before the next gateway is looked at.
Redis keeps ``lastSeen`` too (``presence_state`` reads it), so a write that
is still queued when the process dies is only late in MongoDB, never wrong
in what clients see.

An online transition writes nothing when this process already recorded the
user with the same name (users reconnect far more often than they are new
or renamed); an unknown user is inserted, and only one that turns out to
exist already is updated. Inserts by ``_id`` are cheap everywhere, while an
upsert is a lookup and a write (and on FerretDB/SQLite a collection scan).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from services.presence import metrics
from services.presence.state import Transition
from shared import keys
from shared.cancel import raise_if_cancelled
from shared.command_conn import CommandConnection
from shared.logging import get_logger
from shared.mongo import BULK_CHUNK, USERS, MongoDB, bulk_write_chunked
from shared.protocol import PresenceUpdate, encode
from shared.redis_client import RedisClient, publish_command
from shared.scripts import execute_raw
from shared.settings import Settings

log = get_logger(__name__)

WRITE_BATCH = 1000
RECORDED_MAX = 100_000  # users remembered as stored, with their name (LRU)
DUPLICATE_KEY = 11000


class Announcer:
    def __init__(
        self,
        redis_client: RedisClient,
        db: MongoDB,
        settings: Settings,
        conn: CommandConnection | None = None,
    ) -> None:
        self.redis = redis_client
        self.conn = conn  # standalone Redis: the publishes go out on this held connection
        self.users = db[USERS]
        self._publish = publish_command(settings)
        # user -> latest transition not yet written to MongoDB
        self._pending: dict[str, Transition] = {}
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        # user -> name as this process last stored it
        self._recorded: OrderedDict[str, str | None] = OrderedDict()

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="users-writer")

    async def stop(self) -> None:
        """Write what is pending (bounded wait), then stop."""
        if self._writer is None:
            return
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        try:
            async with asyncio.timeout(5):
                await self._flush()
        except Exception as exc:
            # Redis keeps lastSeen (what clients read); MongoDB's copy stays older.
            log.warning(
                "users not recorded in MongoDB at stop",
                pending=len(self._pending),
                error=str(exc) or type(exc).__name__,
            )

    async def announce(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        publishes: list[tuple[Any, ...]] = []
        for t in transitions:
            status: Literal["online", "offline"] = "online" if t.online else "offline"
            metrics.TRANSITIONS.labels(status=status).inc()
            frame = PresenceUpdate(
                user_id=t.user_id,
                status=status,
                timestamp=t.at,
                last_seen=None if t.online else t.at,
            )
            publishes.append((self._publish, keys.presence_channel(t.user_id), encode(frame)))
        await execute_raw(self.redis, publishes, (), self.conn)
        for t in transitions:
            previous = self._pending.get(t.user_id)
            if previous is None or previous.at <= t.at:
                # Keep the name from an earlier online transition if this one has none.
                name = t.name or (previous.name if previous else None)
                self._pending[t.user_id] = Transition(t.user_id, t.online, t.at, name)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            raise_if_cancelled()
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                try:
                    await self._flush()
                except Exception as exc:
                    metrics.LAST_SEEN_FAILURES.inc()
                    log.warning("recording users in MongoDB failed; retrying", error=str(exc))
                    await asyncio.sleep(1)

    async def _flush(self) -> None:
        users = list(self._pending)[:WRITE_BATCH]
        batch = [self._pending[u] for u in users]
        updates: list[UpdateOne] = []
        inserts: dict[str, Transition] = {}
        for t in batch:
            if not t.online:
                updates.append(_upsert(t))
            elif t.user_id not in self._recorded:
                inserts[t.user_id] = t
            elif t.name is not None and self._recorded[t.user_id] != t.name:
                updates.append(_upsert(t))
        for uid in await self._insert_new(list(inserts.values())):
            updates.append(_upsert(inserts[uid]))
        await bulk_write_chunked(self.users, updates)
        for t in batch:
            self._remember(t)
            if self._pending.get(t.user_id) is t:
                del self._pending[t.user_id]

    async def _insert_new(self, batch: list[Transition]) -> list[str]:
        """Insert users not known to exist; returns those that did exist."""
        existing: list[str] = []
        for start in range(0, len(batch), BULK_CHUNK):
            chunk = batch[start : start + BULK_CHUNK]
            docs = [
                {"_id": t.user_id, "createdAt": t.at}
                | ({"name": t.name} if t.name is not None else {})
                for t in chunk
            ]
            try:
                await self.users.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                existing.extend(chunk[e["index"]].user_id for e in errors)
        return existing

    def _remember(self, t: Transition) -> None:
        name = t.name if t.name is not None else self._recorded.get(t.user_id)
        self._recorded[t.user_id] = name
        self._recorded.move_to_end(t.user_id)
        if len(self._recorded) > RECORDED_MAX:
            self._recorded.popitem(last=False)


def _upsert(t: Transition) -> UpdateOne:
    update: dict[str, Any] = {"$setOnInsert": {"createdAt": t.at}}
    if t.name is not None:
        update["$set"] = {"name": t.name}
    if not t.online:
        update["$max"] = {"lastSeen": t.at}
    return UpdateOne({"_id": t.user_id}, update, upsert=True)
