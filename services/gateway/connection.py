"""One client connection: its socket, identity and bounded send queue.

Only the handler task reads the socket; one writer task per connection drains
its queue, so a slow reader only ever fills its own queue. When the queue
passes its frame or byte bound the connection is closed with 1013 and
nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from aiohttp import WSMsgType, web

from services.gateway import metrics
from shared.logging import get_logger
from shared.protocol import CLOSE_SLOW

log = get_logger(__name__)

CLOSE_TIMEOUT = 2.0


class Connection:
    __slots__ = (
        "_closed",
        "_pending_bytes",
        "_queue",
        "_wakeup",
        "_writer",
        "close_code",
        "connection_id",
        "expires_at",
        "jti",
        "last_activity",
        "max_bytes",
        "max_frames",
        "name",
        "transport",
        "user_id",
        "watching",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        connection_id: str,
        user_id: str,
        name: str | None,
        expires_at: float,
        jti: str | None,
        max_frames: int,
        max_bytes: int,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.connection_id = connection_id
        self.user_id = user_id
        self.name = name
        self.expires_at = expires_at
        self.jti = jti
        self.last_activity = time.monotonic()
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.watching: set[str] = set()
        self.close_code: int | None = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(
            self._write_loop(), name=f"ws-writer-{self.connection_id}"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, frame: bytes) -> None:
        """Queue one encoded frame; never blocks. Overflow closes the connection."""
        if self._closed:
            return
        depth = len(self._queue)
        if depth >= self.max_frames or self._pending_bytes + len(frame) > self.max_bytes:
            metrics.SLOW_READER_CLOSES.inc()
            log.warning(
                "slow reader closed",
                connectionId=self.connection_id,
                queued=depth,
                pending_bytes=self._pending_bytes,
            )
            self.close(CLOSE_SLOW, "send queue overflow")
            return
        metrics.SEND_QUEUE_DEPTH.observe(depth)
        self._queue.append(frame)
        self._pending_bytes += len(frame)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        ws = self.ws
        queue = self._queue
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while queue and not self._closed:
                    frame = queue.popleft()
                    self._pending_bytes -= len(frame)
                    await ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader side notices and cleans up.
            log.debug("write failed", connectionId=self.connection_id, error=str(exc))

    def send_direct(self, frame: bytes) -> None:
        """A frame the gateway answers itself (not a relayed push)."""
        metrics.FRAMES_OUT_DIRECT.inc()
        self.send(frame)

    def close(self, code: int, reason: str = "") -> None:
        """Close from any task without waiting: the writer stops, the socket closes."""
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        metrics.CLOSES.labels(code=str(code)).inc()
        self._queue.clear()
        self._pending_bytes = 0
        self._wakeup.set()
        asyncio.get_running_loop().create_task(self._close_socket(code, reason))

    async def _close_socket(self, code: int, reason: str) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            # A reader that stopped reading cannot take a close frame either.
            if self.transport is not None:
                self.transport.abort()  # type: ignore[attr-defined]

    async def finish(self) -> None:
        """Called by the handler when the socket is done: stop the writer."""
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
