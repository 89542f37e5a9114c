"""Envelope of a push published on a ``user:`` or ``gateway:`` channel.

``<connectionId>\\t<acceptedAt>\\n<frame JSON>``. On a ``gateway:`` channel
the connection id names the connection the frame is for; on a ``user:``
channel it names the one connection to skip (the sender's, which gets
``message_ack`` instead), empty for none. ``acceptedAt`` is the epoch time in
seconds at which the gateway accepted the originating frame (empty when there
is none), so the receiving gateway can observe end-to-end latency across
processes. The frame is already-encoded JSON: the gateway writes the same
bytes to every local socket without decoding them. Ids never contain a tab or
newline and msgspec's JSON never emits a raw newline, so the first newline
ends the header.
"""

from __future__ import annotations


def encode_push(connection_id: str, frame: bytes, accepted_at: float | None = None) -> bytes:
    stamp = b"" if accepted_at is None else repr(accepted_at).encode()
    return connection_id.encode() + b"\t" + stamp + b"\n" + frame


def decode_push(data: bytes) -> tuple[str, float | None, bytes]:
    head, _, frame = data.partition(b"\n")
    conn, _, stamp = head.partition(b"\t")
    return conn.decode(), (float(stamp) if stamp else None), frame
