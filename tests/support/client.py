"""A test WebSocket client speaking the public protocol."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from shared.tokens import make_token
from tests.support.stack import SECRET

Frame = dict[str, Any]


def token_for(user: str, **kwargs: Any) -> str:
    return make_token(user, SECRET, name=user.title(), **kwargs)


class ChatClient:
    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, user: str
    ) -> None:
        self.session = session
        self.ws = ws
        self.user = user
        self.frames: list[Frame] = []
        self.connected: Frame = {}
        self._closed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._first_type: str | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, url: str, user: str, token: str | None = None, **kwargs: Any
    ) -> ChatClient:
        session = aiohttp.ClientSession()
        try:
            if token is None:
                token = token_for(user)
            ws = await session.ws_connect(
                url,
                headers={"Authorization": f"Bearer {token}"} if token else {},
                autoping=True,
                max_msg_size=16 * 1024 * 1024,
                **kwargs,
            )
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws, user)
        client.connected = await client.expect("connected")
        assert client._first_type == "connected", f"first frame was {client._first_type}"
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    if self._first_type is None:
                        self._first_type = frame.get("type")
                    self.frames.append(frame)
                    self._arrived.set()
        finally:
            self._closed.set()
            self._arrived.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def send(self, frame: Frame) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def send_raw(self, data: str) -> None:
        await self.ws.send_str(data)

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 10.0) -> Frame:
        """The first not-yet-consumed frame matching ``predicate``; consumes it."""
        deadline = time.monotonic() + timeout
        while True:
            for index, frame in enumerate(self.frames):
                if predicate(frame):
                    self.frames.pop(index)
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed.is_set():
                raise TimeoutError(
                    f"{self.user}: no matching frame (closed={self._closed.is_set()}, "
                    f"code={self.close_code}); pending: {self.frames[-5:]}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=remaining)

    async def expect(self, frame_type: str, timeout: float = 10.0, **fields: Any) -> Frame:
        return await self.wait_for(
            lambda f: f.get("type") == frame_type and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def request(self, frame: Frame, reply_type: str, timeout: float = 10.0) -> Frame:
        """Send with a fresh requestId and wait for the reply (or an error) for it."""
        request_id = frame.setdefault("requestId", f"r{time.monotonic_ns()}")
        await self.send(frame)
        return await self.wait_for(
            lambda f: f.get("requestId") == request_id and f.get("type") in (reply_type, "error"),
            timeout,
        )

    def drain(self, frame_type: str | None = None) -> list[Frame]:
        """Remove and return buffered frames (of one type, or all)."""
        taken = [f for f in self.frames if frame_type is None or f.get("type") == frame_type]
        self.frames = [f for f in self.frames if f not in taken]
        return taken

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await self.session.close()


def raw_websocket(port: int, user: str) -> socket.socket:
    """A raw socket past the WebSocket handshake, with a small receive buffer: a
    slow reader for as long as the caller does not read it (frames: ``masked_frame``)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?token={token_for(user)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask, RFC 6455 §5.3)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


def received_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sent until it closed the socket (TimeoutError if it never
    does); a reset after the close counts as closed."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def server_close_code(data: bytes) -> int | None:
    """The code of the first close frame in ``data`` (server frames, unmasked, read
    from the start of the stream); None when the stream ends without one."""
    at = 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if opcode == 0x8:
            return int.from_bytes(data[at : at + 2], "big") if size >= 2 else None
        at += size
    return None
