"""ReplyReader: every reply of a read, in order, however the read is sliced for hiredis."""

from __future__ import annotations

from typing import Any

from shared import keys
from shared.pubsub_conn import FEED_SLICE, ReplyReader, encode_command


def _reader() -> tuple[ReplyReader, list[Any], list[Exception]]:
    replies: list[Any] = []
    errors: list[Exception] = []
    reader = ReplyReader(
        replies.append, lambda _reader, exc: errors.append(exc), lambda _reader, _exc: None
    )
    return reader, replies, errors


def test_a_read_much_larger_than_a_feed_slice_yields_every_reply_in_order() -> None:
    # Pushes of several sizes, one larger than a slice, so replies straddle
    # slice boundaries and one spans several slices.
    sizes = [0, 1, 300, FEED_SLICE - 7, 3 * FEED_SLICE + 5, 50]
    pushes = [
        [
            b"message",
            keys.user_channel(f"u{i}").encode(),
            bytes([65 + i % 26]) * sizes[i % len(sizes)],
        ]
        for i in range(400)
    ]
    wire = b"".join(encode_command(*push) for push in pushes)
    assert len(wire) > 20 * FEED_SLICE
    reader, replies, errors = _reader()
    # One read of most of it, then the rest split mid-reply.
    cut = len(wire) - 1000
    reader.data_received(wire[:cut])
    reader.data_received(wire[cut:])
    assert errors == []
    assert replies == pushes


def test_garbage_after_good_replies_is_a_protocol_error_after_they_are_handed_on() -> None:
    good = [[b"message", keys.user_channel("a").encode(), b"x" * 100] for _ in range(200)]
    wire = b"".join(encode_command(*push) for push in good) + b"?not resp\r\n"
    reader, replies, errors = _reader()
    reader.data_received(wire)
    assert replies == good
    assert len(errors) == 1
