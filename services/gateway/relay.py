"""Appends relayed frames and connection events to Redis streams in batches.

Frames that arrive together (from any connection) go out as one pipeline.
On standalone Redis a frame with a rate limit goes as one script call that
checks the limit and appends only if it allows (``limited_append.lua``), so
a batch costs one round trip however many frames it holds. On a cluster the
limiter's keys and the streams live in different slots: the checks go first,
then the XADDs of those allowed, two round trips. Each item carries
callbacks for when it was refused by the limiter or could not be written, so
a client is told RATE_LIMITED or SERVICE_UNAVAILABLE instead of its frame
vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway import metrics
from shared.cancel import raise_if_cancelled
from shared.command_conn import held_connection
from shared.logging import get_logger
from shared.ratelimit import Limit, RateLimiter, decision_from_reply
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.scripts import run_many, send_raw, settle_raw
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
                async with asyncio.timeout(5):
                    await self._task
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
        if self.conn is not None and self.limiter is not None:
            # Loaded before the first batch: a batch whose script calls answer
            # NOSCRIPT has its plain XADDs (connection events, ack_queued)
            # appended before the retried checked frames. Those are never of
            # the same kind and routing key, so no order a consumer relies on
            # changes, but a start need not cause it.
            with contextlib.suppress(*REDIS_ERRORS):
                script = self.limiter.append_script
                script.sha = await self.redis.script_load(script.script)
        while True:
            raise_if_cancelled()
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
        # Standalone Redis: a rate-limited frame is checked and appended by one
        # script call, so the batch is one round trip. Otherwise (a cluster, or
        # nothing to check) the checks go first and the allowed frames after.
        inline = self.conn is not None and any(item.check is not None for item in batch)
        if inline:
            limiter = self.limiter
            assert limiter is not None
            commands = [
                limiter.append_words(
                    item.check.key, item.check.limit, item.stream, item.maxlen, item.body
                )
                if item.check is not None
                else xadd_words(item.stream, item.body, item.maxlen)
                for item in batch
            ]
            scripts = [limiter.append_script]
        else:
            try:
                batch = await self._rate_limit(batch)
            except REDIS_ERRORS as exc:
                log.warning("rate limit check failed; refusing the batch", error=str(exc))
                self._fail(batch)
                return
            if not batch:
                return
            commands = [xadd_words(item.stream, item.body, item.maxlen) for item in batch]
            scripts = []
        try:
            replies = await send_raw(self.redis, commands, self.conn)
            results = await settle_raw(
                self.redis, commands, replies, scripts, self.conn, raise_first=False
            )
        except REDIS_ERRORS as exc:
            # Fail closed: nothing can be relayed without Redis anyway.
            log.warning("stream append failed", error=str(exc), count=len(batch))
            self._fail(batch)
            return
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._fail([item])
            elif inline and item.check is not None and not self._allowed(item.check, result):
                continue  # refused by its check: counted and told, not appended
            elif item.done is not None and not item.done.done():
                item.done.set_result(True)

    @staticmethod
    def _allowed(check: RateCheck, reply: list[int]) -> bool:
        """Whether a check's reply allows; a refusal is counted and told to the client."""
        decision = decision_from_reply(reply)
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(action=check.limit.action).inc()
            check.on_limited(decision.retry_after_ms)
        return decision.allowed

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
            assert item.check is not None
            if not self._allowed(item.check, reply):
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
