"""A closed socket's objects are freed at once, not left to the cycle collector.

The gateway runs in this process (a real redis-server behind it) so the test
can count its live responses. The cycle collector is off meanwhile: only
reference counting can free a closed socket here, which is what happens in
production between the rare full collections (see shared.gctune).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from services.gateway.app import create_app
from shared.settings import Settings
from tests.support.chat import uid, until
from tests.support.client import masked_frame, raw_websocket
from tests.support.servers import free_port
from tests.support.stack import SECRET

CLOSE, BINARY = 0x8, 0x2


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


def _read_until_closed(sock: socket.socket) -> None:
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def _close_frame_then_drop(sock: socket.socket) -> None:
    """What most clients do when they leave: a close frame, no wait for the answer."""
    sock.sendall(masked_frame(CLOSE, struct.pack("!H", 1000)))
    sock.close()


def _close_handshake(sock: socket.socket) -> None:
    sock.sendall(masked_frame(CLOSE, struct.pack("!H", 1000)))
    _read_until_closed(sock)
    sock.close()


def _reset(sock: socket.socket) -> None:
    """A device that vanishes: the connection reset, no close frame."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _closed_by_the_server(sock: socket.socket) -> None:
    sock.sendall(masked_frame(BINARY, b"\x00"))  # refused with 1003
    _read_until_closed(sock)
    sock.close()


def _silent_until_dropped(sock: socket.socket) -> None:
    """A peer gone without a trace: it never answers the pings, and the heartbeat drops it."""
    _read_until_closed(sock)
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
    gc.collect()
    gc.disable()
    try:
        socks = [await asyncio.to_thread(raw_websocket, gateway_port, uid("gc")) for _ in range(5)]
        assert _live_responses() == 5
        for sock in socks:
            await asyncio.to_thread(leave, sock)
        try:
            await until(lambda: _live_responses() == 0, timeout=10)
        except TimeoutError:
            pytest.fail(f"{_live_responses()} closed sockets still held (a reference cycle)")
    finally:
        gc.enable()
