"""A consumer's round (XACKs, then XREADGROUP) on a held connection: the reply,
unpacked from the wire, has the shape redis-py gives through its pool, for new
entries, re-read pending ones, one deleted while pending, and an expired block."""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as redis

from shared.command_conn import CommandConnection
from shared.streams import ack_then_read, ensure_group


def _shape(reply: Any) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
    return [(name, [tuple(entry) for entry in entries]) for name, entries in reply]


async def test_held_connection_reads_match_the_pool(client: redis.Redis) -> None:
    a, b = f"s:{uuid.uuid4().hex}", f"s:{uuid.uuid4().hex}"
    for stream in (a, b):
        await ensure_group(client, stream, "g")
    ids = [await client.xadd(a, {b"d": str(i).encode()}) for i in range(3)]
    other = await client.xadd(b, {b"d": b"x", b"e": b"y"})
    conn = CommandConnection(client)
    try:
        new = await ack_then_read(client, conn, "g", "c", {}, {a: ">", b: ">"}, 10, 100)
        assert _shape(new) == [
            (a.encode(), [(i, {b"d": str(n).encode()}) for n, i in enumerate(ids)]),
            (b.encode(), [(other, {b"d": b"x", b"e": b"y"})]),
        ]
        await client.xdel(a, ids[1])  # deleted while pending: an id with no body
        pending = {a: "0", b: "0"}
        held = await ack_then_read(client, conn, "g", "c", {}, pending, 10, 0)
        pooled = await ack_then_read(client, None, "g", "c", {}, pending, 10, 0)
        assert _shape(held) == _shape(pooled)
        assert (ids[1], {}) in _shape(held)[0][1]
        # Nothing new before the block expires: an empty reply, as from the pool.
        assert await ack_then_read(client, conn, "g", "c", {}, {a: ">"}, 10, 50) == []
        to_ack = {a: [ids[0], ids[2]], b: [other]}
        assert await ack_then_read(client, conn, "g", "c", to_ack, None, 10, 0) is None
        assert to_ack == {}
        assert (await client.xpending(a, "g"))["pending"] == 1  # the deleted one
        assert (await client.xpending(b, "g"))["pending"] == 0
    finally:
        conn.close()
