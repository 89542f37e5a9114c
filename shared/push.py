"""Envelope of a push published on a ``user:`` or ``gateway:`` channel.

``<connectionId>\\t<acceptedAt>\\t<requestType>[\\t<reply>]\\n<frame JSON>``. On
a ``gateway:`` channel the connection id names the connection the frame is
for; on a ``user:`` channel it names the one connection that does not get the
frame (the sender's), empty for none. That connection gets ``reply`` instead,
when there is one: the sender's ``message_ack`` rides on the push to the
sender's own channel, so a message costs one publish per member and no
separate reply (the gateway holding the sending connection always holds the
sender's channel). ``acceptedAt`` is the epoch time in seconds at which the
gateway accepted the originating frame and ``requestType`` that frame's type
(both empty when there is none), so the receiving gateway can observe
round-trip and end-to-end latency across processes. The frames are
already-encoded JSON: the gateway writes the same bytes to every local socket
without decoding them. Ids and types never contain a tab or newline and
msgspec's JSON never emits a raw tab or newline (both are escaped inside
strings), so the first newline ends the header and the reply is its fourth
tab-separated field.

A gateway that predates the reply field would take a reply for part of the
request type and never send it: the delivery service puts a reply there only
for a command whose gateway says it reads them (``Command.ack_on_user_channel``).
"""

from __future__ import annotations

from typing import NamedTuple


class Push(NamedTuple):
    connection_id: str
    accepted_at: float | None
    request_type: str
    frame: bytes
    reply: bytes = b""


def encode_push(
    connection_id: str,
    frame: bytes,
    accepted_at: float | None = None,
    request_type: str = "",
    reply: bytes = b"",
) -> bytes:
    stamp = b"" if accepted_at is None else repr(accepted_at).encode()
    if reply:
        return b"%s\t%s\t%s\t%s\n%s" % (
            connection_id.encode(),
            stamp,
            request_type.encode(),
            reply,
            frame,
        )
    return b"%s\t%s\t%s\n%s" % (connection_id.encode(), stamp, request_type.encode(), frame)


def decode_push(data: bytes) -> Push:
    head, _, frame = data.partition(b"\n")
    conn, stamp, kind, *reply = head.split(b"\t", 3)
    return Push(
        conn.decode(),
        float(stamp) if stamp else None,
        kind.decode(),
        frame,
        reply[0] if reply else b"",
    )
