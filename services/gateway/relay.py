"""Appends relayed frames and connection events to Redis streams in batches.

Frames that arrive together (from any connection) go out as one pipeline of
XADDs, so the Redis round trip is paid once per batch, not per frame. Each
item carries a callback run when its append failed, so a client is told
SERVICE_UNAVAILABLE instead of its frame vanishing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway import metrics
from shared import keys
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient

log = get_logger(__name__)

MAX_BATCH = 512


@dataclass(slots=True)
class _Item:
    stream: str
    body: bytes
    maxlen: int
    on_error: Callable[[], None] | None
    done: asyncio.Future[bool] | None


class StreamRelay:
    def __init__(self, redis_client: RedisClient) -> None:
        self.redis = redis_client
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
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)

    def append(
        self,
        stream: str,
        body: bytes,
        maxlen: int,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """Queue an XADD; ``on_error`` runs if it could not be written."""
        self._items.append(_Item(stream, body, maxlen, on_error, None))
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
                await self._flush(batch)
            if self._closing:
                return

    async def _flush(self, batch: list[_Item]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for item in batch:
            pipe.xadd(
                item.stream,
                {keys.STREAM_FIELD: item.body},
                maxlen=item.maxlen,
                approximate=True,
            )
        try:
            results = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            log.warning("stream append failed", error=str(exc), count=len(batch))
            results = [exc] * len(batch)
        for item, result in zip(batch, results, strict=True):
            ok = not isinstance(result, Exception)
            if not ok:
                metrics.RELAY_FAILURES.inc()
                if item.on_error is not None:
                    item.on_error()
            if item.done is not None and not item.done.done():
                item.done.set_result(ok)
