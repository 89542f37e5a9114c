"""Frames built once for many sockets are the bytes aiohttp itself would write."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.base_protocol import BaseProtocol

from services.gateway.wsframe import PING_FRAME, pong_frame, text_frame


class _Sink(asyncio.Transport):
    """Collects what a writer hands to its transport."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def writelines(self, chunks: object) -> None:
        for chunk in chunks:  # type: ignore[attr-defined]
            self.data += chunk

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
async def test_text_frame_matches_aiohttp_writer(size: int) -> None:
    payload = bytes(65 + i % 26 for i in range(size))
    sink = _Sink()
    writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), sink)
    await writer.send_frame(payload, WSMsgType.TEXT)
    assert text_frame(payload) == bytes(sink.data)


@pytest.mark.parametrize("size", [0, 3, 125])
async def test_control_frames_match_aiohttp_writer(size: int) -> None:
    payload = bytes(range(size))
    sink = _Sink()
    writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), sink)
    await writer.send_frame(payload, WSMsgType.PONG)
    assert pong_frame(payload) == bytes(sink.data)
    sink.data.clear()
    await writer.send_frame(b"", WSMsgType.PING)
    assert bytes(sink.data) == PING_FRAME
