"""Envelope of a push published on a ``user:`` or ``gateway:`` channel.

``<connectionId>\\t<acceptedAt>\\t<requestType>\\n<frame JSON>``. On a
``gateway:`` channel the connection id names the connection the frame is for;
on a ``user:`` channel it names the one connection to skip (the sender's,
which gets ``message_ack`` instead), empty for none. ``acceptedAt`` is the
epoch time in seconds at which the gateway accepted the originating frame and
``requestType`` that frame's type (both empty when there is none), so the
receiving gateway can observe round-trip and end-to-end latency across
processes. The frame is already-encoded JSON: the gateway writes the same
bytes to every local socket without decoding them. Ids and types never
contain a tab or newline and msgspec's JSON never emits a raw newline, so the
first newline ends the header.
"""

from __future__ import annotations

from typing import NamedTuple


class Push(NamedTuple):
    connection_id: str
    accepted_at: float | None
    request_type: str
    frame: bytes


def encode_push(
    connection_id: str, frame: bytes, accepted_at: float | None = None, request_type: str = ""
) -> bytes:
    stamp = b"" if accepted_at is None else repr(accepted_at).encode()
    return b"%s\t%s\t%s\n%s" % (connection_id.encode(), stamp, request_type.encode(), frame)


def decode_push(data: bytes) -> Push:
    head, _, frame = data.partition(b"\n")
    conn, stamp, kind = head.split(b"\t", 2)
    return Push(conn.decode(), float(stamp) if stamp else None, kind.decode(), frame)
