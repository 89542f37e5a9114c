"""The recent-messages cache on a real Redis: a batch's messages of several
conversations go in with one ZADD, trim and TTL refresh per conversation,
the newest ``size`` of each are kept, and pages come back from it."""

from __future__ import annotations

import uuid

import pytest

from services.delivery.outbox import Outbox
from services.delivery.recent import RECENT_TTL_SECONDS, RecentCache
from shared import keys
from shared.command_conn import held_connection
from shared.settings import Settings
from tests.support.chat import message


@pytest.mark.parametrize("held", [False, True], ids=["pool", "held"])
async def test_one_batch_of_two_conversations(client, redis_server, held: bool) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    cache = RecentCache(client, size=5)
    a, b = f"c-{uuid.uuid4().hex}", f"c-{uuid.uuid4().hex}"
    conn = held_connection(client) if held else None
    outbox = Outbox(client, settings, conn)
    # Interleaved, as a batch of sends to two conversations arrives.
    batch = [message(cid, seq) for seq in range(1, 9) for cid in (a, b)]
    cache.add(outbox, batch)
    assert len(outbox) == 6  # ZADD, trim and EXPIRE once per conversation
    await outbox.flush()
    for cid in (a, b):
        key = keys.recent_messages_key(cid)
        scores = [int(s) for _, s in await client.zrange(key, 0, -1, withscores=True)]
        assert scores == list(range(4, 9))  # the newest five
        assert 0 < await client.ttl(key) <= RECENT_TTL_SECONDS
        page = await cache.page(cid, None, 3, last_seq=8, conn=conn)
        assert page is not None
        messages, more = page
        assert [m.seq for m in messages] == [6, 7, 8]
        assert [m.content for m in messages] == ["m6", "m7", "m8"]
        assert more is True
        # Older than the cache holds: not provably complete, so MongoDB answers.
        assert await cache.page(cid, 4, 3, last_seq=8, conn=conn) is None
        # A full older page the cache holds all of.
        older = await cache.page(cid, 8, 3, last_seq=8, conn=conn)
        assert older is not None and [m.seq for m in older[0]] == [5, 6, 7]
    if conn is not None:
        conn.close()


async def test_a_redone_batch_changes_nothing(client, redis_server) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    cache = RecentCache(client, size=10)
    cid = f"c-{uuid.uuid4().hex}"
    for _ in range(2):
        outbox = Outbox(client, settings)
        cache.add(outbox, [message(cid, seq) for seq in (1, 2, 3)])
        await outbox.flush()
    assert await client.zcard(keys.recent_messages_key(cid)) == 3
