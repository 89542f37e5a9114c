"""WebSocket text frames built once and written as the same bytes to many sockets.

A server never masks its frames (RFC 6455 §5.1), so a frame's bytes do not
depend on the socket: a push for ten devices is framed once and handed to ten
transports, instead of going through a per-socket writer ten times.
Frames are sent uncompressed (RSV1 clear), which RFC 7692 §6 allows even
where permessage-deflate was negotiated.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame carrying ``payload``."""
    size = len(payload)
    if size < 126:
        header = bytes((_FIN_TEXT, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, size)
    return header + payload
