"""One client connection: its socket, identity and write-buffer bound.

Frames are written straight to the socket's transport, already framed (see
``wsframe``): no queue and no writer task per connection, so an idle
connection costs only this object and the socket, and a push is one
``transport.write`` per device. The transport buffers what the peer has not
read yet; when that passes ``max_bytes`` the reader is too slow and the
connection is closed with 1013 without anybody waiting for it.

Pushes routed from one read of the pub/sub connection are deferred to the
end of that pass (``defer`` then ``flush``, driven by the hub): when the
gateway falls behind, one read carries several pushes for the same socket,
and they then go out as one write instead of one write each. A socket
write (with the kernel's loopback or NIC work behind it) is most of the
cost of a delivered push, and this makes the gateway cheaper exactly when
it is busiest. Any other frame for a connection with deferred ones joins
them, so frames keep their order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Set as AbstractSet

from aiohttp import web

from services.gateway import metrics
from services.gateway.wsframe import PING_FRAME, text_frame
from shared.logging import get_logger
from shared.protocol import CLOSE_ABNORMAL, CLOSE_SLOW

log = get_logger(__name__)

CLOSE_TIMEOUT = 2.0


class Connection:
    __slots__ = (
        "_closed",
        "_closing",
        "_deferred",
        "_watching",
        "close_code",
        "connection_id",
        "expires_at",
        "jti",
        "last_activity",
        "last_received",
        "max_bytes",
        "name",
        "pinged_at",
        "transport",
        "user_id",
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
        max_bytes: int,
    ) -> None:
        self.ws = ws
        self.transport: asyncio.WriteTransport | None = transport  # type: ignore[assignment]
        self.connection_id = connection_id
        self.user_id = user_id
        self.name = name
        self.expires_at = expires_at
        self.jti = jti
        self.last_activity = time.monotonic()
        # Any frame received (pongs included) proves the peer alive; the
        # heartbeat sweep pings only connections silent for a whole interval.
        self.last_received = self.last_activity
        self.pinged_at = 0.0  # when the unanswered ping went out; 0: none
        self.max_bytes = max_bytes
        self._watching: set[str] | None = None  # most connections never watch anyone
        self.close_code: int | None = None
        self._closed = False
        self._closing: asyncio.Task[None] | None = None
        self._deferred: list[bytes] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def watching(self) -> AbstractSet[str]:
        """Users whose presence this connection watches."""
        return self._watching if self._watching is not None else frozenset()

    def watch(self, user_id: str) -> None:
        if self._watching is None:
            self._watching = set()
        self._watching.add(user_id)

    def unwatch(self, user_id: str) -> None:
        if self._watching is not None:
            self._watching.discard(user_id)

    def buffered(self) -> int:
        """Bytes written to this socket that the peer has not read yet."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()

    def write(self, wire: bytes) -> None:
        """Write one already-framed frame; never blocks. A full buffer closes the connection."""
        if self._deferred is not None:
            self._deferred.append(wire)  # behind the deferred ones, written with them
            return
        self._write_now(wire)

    def defer(self, wire: bytes) -> bool:
        """Hold ``wire`` for ``flush``; True when it is the first held (the caller flushes)."""
        deferred = self._deferred
        if deferred is None:
            self._deferred = [wire]
            return True
        deferred.append(wire)
        return False

    def flush(self) -> bool:
        """Write the deferred frames as one write; True if a write was made."""
        deferred = self._deferred
        if deferred is None:
            return False
        self._deferred = None
        return self._write_now(deferred[0] if len(deferred) == 1 else b"".join(deferred))

    def _write_now(self, wire: bytes) -> bool:
        if self._closed:
            return False
        transport = self.transport
        if transport is None or transport.is_closing():
            return False  # the reader side notices the lost socket and cleans up
        pending = transport.get_write_buffer_size()
        if pending + len(wire) > self.max_bytes:
            metrics.SLOW_READER_CLOSES.inc()
            log.warning(
                "slow reader closed", connectionId=self.connection_id, pending_bytes=pending
            )
            self.close(CLOSE_SLOW, "send buffer overflow")
            return False
        transport.write(wire)
        return True

    def send(self, frame: bytes) -> None:
        """Frame and write one encoded JSON frame for this connection alone."""
        self.write(text_frame(frame))

    def send_direct(self, frame: bytes) -> None:
        """A frame the gateway answers itself (not a relayed push)."""
        metrics.FRAMES_OUT_DIRECT.inc()
        self.send(frame)

    def ping(self, now: float) -> None:
        self.pinged_at = now
        self.write(PING_FRAME)

    def drop(self) -> None:
        """The peer stopped answering: abort the socket (no close handshake, code 1006)."""
        if self._closed:
            return
        self._closed = True
        self.close_code = CLOSE_ABNORMAL
        metrics.CLOSES.labels(code=str(CLOSE_ABNORMAL)).inc()
        if self.transport is not None:
            self.transport.abort()

    def close(self, code: int, reason: str = "") -> None:
        """Close from any task without waiting: nothing more is written, the socket closes."""
        if self._closed:
            return
        self.flush()  # what was routed before the close still goes out first
        if self._closed:
            return  # flushing found a slow reader and closed it already
        self._closed = True
        self.close_code = code
        metrics.CLOSES.labels(code=str(code)).inc()
        self._closing = asyncio.get_running_loop().create_task(self._close_socket(code, reason))

    async def _close_socket(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            # A reader that stopped reading cannot take a close frame either.
            if self.transport is not None:
                self.transport.abort()

    async def finish(self) -> None:
        """Called by the handler when the socket is done: nothing more is written.

        A close this side started is waited for, so the client gets its code
        rather than the default one aiohttp sends for a finished handler.
        """
        self._closed = True
        if self._closing is not None:
            await self._closing
