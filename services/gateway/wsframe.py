"""WebSocket text frames built once and written as the same bytes to many sockets.

A server never masks its frames (RFC 6455 §5.1), so a frame's bytes do not
depend on the socket: a push for ten devices is framed once and handed to ten
transports, instead of going through a per-socket writer ten times.
Frames are sent uncompressed (RSV1 clear), which RFC 7692 §6 allows even
where permessage-deflate was negotiated.
"""

from __future__ import annotations

import struct

_FIN = 0x80
_TEXT = 0x1
_PING = 0x9
_PONG = 0xA


def _frame(opcode: int, payload: bytes) -> bytes:
    first = _FIN | opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload``."""
    return _frame(_TEXT, payload)


def pong_frame(payload: bytes) -> bytes:
    """The answer to a ping: its application data echoed (at most 125 bytes, RFC 6455 §5.5)."""
    return _frame(_PONG, payload[:125])


# Every heartbeat ping is the same two bytes.
PING_FRAME = _frame(_PING, b"")
