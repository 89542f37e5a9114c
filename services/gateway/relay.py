"""Appends relayed frames and connection events to Redis streams in batches.

Frames that arrive together (from any connection) go out as one pipeline:
first the rate-limit checks of the frames that have one, then the XADDs of
those allowed, so a batch costs at most two round trips however many frames
it holds. Each item carries callbacks for when it was refused by the limiter
or could not be written, so a client is told RATE_LIMITED or
SERVICE_UNAVAILABLE instead of its frame vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway import metrics
from shared.command_conn import held_connection
from shared.logging import get_logger
from shared.ratelimit import Limit, RateLimiter, decision_from_reply
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.scripts import run_many, send_raw
from shared.streams import xadd_words

log = get_logger(__name__)

MAX_BATCH = 512


@dataclass(slots=True)
class RateCheck:
    key: str
    limit: Limit
    on_limited: Callable[[int], None]


@dataclass(slots=True)
class _Item:
    stream: str
    body: bytes
    maxlen: int
    on_error: Callable[[], None] | None
    done: asyncio.Future[bool] | None
    check: RateCheck | None = None


class StreamRelay:
    def __init__(self, redis_client: RedisClient, limiter: RateLimiter | None = None) -> None:
        self.redis = redis_client
        self.limiter = limiter
        # Standalone Redis: every batch goes out on this held connection.
        self.conn = held_connection(redis_client)
        self._items: list[_Item] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stream-relay")

    async def stop(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=5)
        if self.conn is not None:
            self.conn.close()

    def append(
        self,
        stream: str,
        body: bytes,
        maxlen: int,
        on_error: Callable[[], None] | None = None,
        check: RateCheck | None = None,
    ) -> None:
        """Queue an XADD (after ``check`` passes); ``on_error`` runs if it failed."""
        self._items.append(_Item(stream, body, maxlen, on_error, None, check))
        self._wakeup.set()

    async def append_and_wait(self, stream: str, body: bytes, maxlen: int) -> bool:
        """Queue an XADD and wait until it is written (True) or failed (False)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._items.append(_Item(stream, body, maxlen, None, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._items:
                batch = self._items[:MAX_BATCH]
                del self._items[:MAX_BATCH]
                try:
                    await self._flush(batch)
                except Exception:
                    log.exception("relay flush failed")
                    self._fail(batch)
            if self._closing:
                return

    async def _flush(self, batch: list[_Item]) -> None:
        try:
            batch = await self._rate_limit(batch)
        except REDIS_ERRORS as exc:
            log.warning("rate limit check failed; refusing the batch", error=str(exc))
            self._fail(batch)
            return
        if not batch:
            return
        commands = [xadd_words(item.stream, item.body, item.maxlen) for item in batch]
        try:
            results = await send_raw(self.redis, commands, self.conn)
        except REDIS_ERRORS as exc:
            log.warning("stream append failed", error=str(exc), count=len(batch))
            results = [exc] * len(batch)
        for item, result in zip(batch, results, strict=True):
            ok = not isinstance(result, Exception)
            if not ok:
                self._fail([item])
            elif item.done is not None and not item.done.done():
                item.done.set_result(True)

    async def _rate_limit(self, batch: list[_Item]) -> list[_Item]:
        """Run the batch's rate-limit checks in one pipeline; keep the allowed items."""
        checked = [item for item in batch if item.check is not None]
        if not checked or self.limiter is None:
            return batch
        replies = await run_many(
            self.redis,
            self.limiter.script,
            [
                self.limiter.call_args(item.check.key, item.check.limit)
                for item in checked
                if item.check is not None
            ],
            self.conn,
        )
        refused: set[int] = set()
        for item, reply in zip(checked, replies, strict=True):
            decision = decision_from_reply(reply)
            if not decision.allowed:
                assert item.check is not None
                metrics.RATE_LIMITED.labels(action=item.check.limit.action).inc()
                item.check.on_limited(decision.retry_after_ms)
                refused.add(id(item))
        return [item for item in batch if id(item) not in refused]

    @staticmethod
    def _fail(items: list[_Item]) -> None:
        for item in items:
            metrics.RELAY_FAILURES.inc()
            if item.on_error is not None:
                item.on_error()
            if item.done is not None and not item.done.done():
                item.done.set_result(False)
