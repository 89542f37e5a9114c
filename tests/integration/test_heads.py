"""A conversation's head (last seq, last activity) lives in Redis, the messages in
MongoDB: what readers see when the head moves, and when Redis loses it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from services.delivery.heads import HEAD_TTL_MS
from shared import keys
from shared.redis_client import RedisClient
from tests.support.chat import create_conversation, pair_on_own_stack, send, uid
from tests.support.client import ChatClient
from tests.support.stack import Service, Stack


async def _listing(client: ChatClient) -> list[dict[str, Any]]:
    reply = await client.request({"type": "list_conversations"}, "conversations")
    assert reply["type"] == "conversations", reply
    return reply["conversations"]  # type: ignore[no-any-return]


async def _history(client: ChatClient, cid: str) -> list[int]:
    reply = await client.request({"type": "fetch_history", "conversationId": cid}, "history")
    assert reply["type"] == "history", reply
    return [m["seq"] for m in reply["messages"]]


async def test_list_is_newest_first_and_a_lost_head_is_rebuilt_from_the_store(
    connect, stack
) -> None:
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    a = await connect(alice)
    first = (await create_conversation(a, bob))["id"]
    second = (await create_conversation(a, carol))["id"]
    for i in range(3):
        await send(a, first, f"m{i}")
    await send(a, second, "s0")
    assert [c["id"] for c in await _listing(a)] == [second, first]
    await send(a, first, "m3")  # the older conversation is the newest again
    listing = await _listing(a)
    assert [(c["id"], c["lastSeq"]) for c in listing] == [(first, 4), (second, 1)]

    store = stack.redis_client()
    try:
        head = keys.conversation_head_key(first)
        assert 0 < await store.pttl(head) <= HEAD_TTL_MS  # a view of the store: it expires
        await store.delete(head)  # expired, or Redis lost it
        b = await connect(bob)
        (entry,) = [c for c in await _listing(b) if c["id"] == first]
        assert (entry["lastSeq"], entry["unreadCount"]) == (4, 4)
        assert await store.hget(head, "seq") == b"4"  # written back
        assert await store.pttl(head) > 0
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def _three_sent(
    stack: Stack,
) -> AsyncIterator[tuple[Service, ChatClient, ChatClient, str, RedisClient]]:
    """A stack of its own, two members, a conversation holding seqs 1..3, and Redis."""
    async with pair_on_own_stack(stack) as (services, a, b, cid, store):
        for i in range(3):
            await send(a, cid, f"m{i}")
        yield services["delivery"], a, b, cid, store


def _restart(stack: Stack, delivery: Service) -> None:
    """A new delivery process: the partitions' new owner, its cache empty."""
    delivery.stop()
    stack.restart(delivery)


async def test_new_owner_with_no_head_numbers_and_pages_from_the_store(fresh_stack) -> None:
    """Delivery restarted (its cache gone) after Redis lost the head and the recent
    cache: the newest page still comes out whole and the next seq follows the store."""
    async with _three_sent(fresh_stack) as (delivery, a, b, cid, store):
        _restart(fresh_stack, delivery)
        await store.delete(keys.conversation_head_key(cid), keys.recent_messages_key(cid))
        assert await _history(b, cid) == [1, 2, 3]
        assert (await send(a, cid, "m3"))["message"]["seq"] == 4


async def test_head_behind_the_store_is_caught_by_the_unique_index(fresh_stack) -> None:
    """A head behind the stored messages (moved back by hand here; in life a
    crash between the insert and the pipeline) never makes the owner reuse a
    seq: the insert collides, the counter is reloaded from the store."""
    async with _three_sent(fresh_stack) as (delivery, a, _b, cid, store):
        await store.hset(keys.conversation_head_key(cid), "seq", 1)
        _restart(fresh_stack, delivery)
        assert (await send(a, cid, "m3"))["message"]["seq"] == 4
        assert await store.hget(keys.conversation_head_key(cid), "seq") == b"4"
