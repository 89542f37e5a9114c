"""A closed socket's objects are freed at once, not left to the cycle collector.

The gateway runs in this process (a real redis-server behind it) so the test
can count its live responses. The cycle collector is off meanwhile: only
reference counting can free a closed socket here, which is what happens in
production between the rare full collections (see shared.gctune).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from aiohttp import web

from services.gateway import session
from services.gateway.app import create_app
from shared.settings import Settings
from tests.support.chat import uid, until
from tests.support.client import (
    masked_frame,
    raw_websocket,
    received_until_closed,
    server_close_code,
)
from tests.support.servers import free_port
from tests.support.stack import SECRET

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


@pytest.fixture
async def gateway_port(redis_server) -> AsyncIterator[int]:  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        {
            "CHAT_REDIS_URL": redis_server.url,
            "CHAT_JWT_SECRET": SECRET,
            "CHAT_INSTANCE_ID": f"gateway-{uuid.uuid4().hex[:8]}",
            # Short, so a peer that never answers pings is dropped within the test.
            "CHAT_HEARTBEAT_SECONDS": "0.4",
        }
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def _live_responses() -> int:
    return sum(isinstance(o, web.WebSocketResponse) for o in gc.get_objects())


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _until_all_freed(what: str) -> None:
    try:
        await until(lambda: _live_responses() == 0, timeout=10)
    except TimeoutError:
        pytest.fail(f"{_live_responses()} {what} still held (a reference cycle)")


def _close_frame_then_drop(sock: socket.socket) -> None:
    """What most clients do when they leave: a close frame, no wait for the answer."""
    sock.sendall(masked_frame(CLOSE, struct.pack("!H", 1000)))
    sock.close()


def _close_handshake(sock: socket.socket) -> None:
    sock.sendall(masked_frame(CLOSE, struct.pack("!H", 1000)))
    received_until_closed(sock)
    sock.close()


def _reset(sock: socket.socket) -> None:
    """A device that vanishes: the connection reset, no close frame."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _closed_by_the_server(sock: socket.socket) -> None:
    sock.sendall(masked_frame(BINARY, b"\x00"))  # refused with 1003
    received_until_closed(sock)
    sock.close()


def _silent_until_dropped(sock: socket.socket) -> None:
    """A peer gone without a trace: it never answers the pings, and the heartbeat drops it."""
    received_until_closed(sock)
    sock.close()


@pytest.mark.parametrize(
    "leave",
    [
        _close_frame_then_drop,
        _close_handshake,
        _reset,
        _closed_by_the_server,
        _silent_until_dropped,
    ],
)
async def test_a_closed_socket_is_freed_by_reference_counting(
    gateway_port: int, leave: Callable[[socket.socket], None]
) -> None:
    with _collector_off():
        socks = [await asyncio.to_thread(raw_websocket, gateway_port, uid("gc")) for _ in range(5)]
        assert _live_responses() == 5
        for sock in socks:
            await asyncio.to_thread(leave, sock)
        await _until_all_freed("closed sockets")


async def test_a_session_that_fails_is_closed_1011_and_freed(
    gateway_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect while serving a socket: the client is told 1011, the socket is freed."""

    async def defect(*_: object) -> None:
        raise RuntimeError("injected defect")

    monkeypatch.setattr(session, "dispatch", defect)
    with _collector_off():
        socks = [await asyncio.to_thread(raw_websocket, gateway_port, uid("gc")) for _ in range(3)]
        for sock in socks:  # all at once: a silent socket is dropped by the heartbeat
            sock.sendall(masked_frame(TEXT, b'{"type":"ping"}'))
        codes = []
        for sock in socks:
            codes.append(server_close_code(await asyncio.to_thread(received_until_closed, sock)))
            sock.close()
        assert codes == [1011] * 3
        await _until_all_freed("failed sessions")
