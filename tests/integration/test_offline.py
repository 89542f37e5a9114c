"""Offline queues, overflow, sync and receipts: no acknowledged message is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared import keys
from shared.redis_client import RedisClient
from tests.support.chat import create_conversation, send, uid
from tests.support.sync import drain_queue, messages_in, sync


async def _send_many(client, conversation_id: str, count: int, prefix: str = "m") -> list[dict]:  # type: ignore[no-untyped-def]
    acks = []
    for i in range(count):
        ack = await send(client, conversation_id, f"{prefix}{i}", clientMessageId=f"{prefix}{i}")
        assert ack["type"] == "message_ack", ack
        acks.append(ack["message"])
    return acks


async def _depth_reaches(redis_client: RedisClient, want: int) -> None:
    """The cluster-wide queue depth counter (the metrics service's gauge) reaches ``want``."""
    deadline = time.monotonic() + 10
    while int(await redis_client.get(keys.offline_depth_key()) or 0) != want:
        assert time.monotonic() < deadline, await redis_client.get(keys.offline_depth_key())
        await asyncio.sleep(0.02)


async def test_offline_user_gets_everything_in_order_and_acked_batches_are_gone(
    connect, stack
) -> None:
    redis_client = stack.redis_client()
    depth = int(await redis_client.get(keys.offline_depth_key()) or 0)
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    conversation = await create_conversation(a, bob)
    sent = await _send_many(a, conversation["id"], 250)
    await _depth_reaches(redis_client, depth + 250)

    first = await connect(bob)
    batch = await first.expect("queued_messages")
    assert len(batch["messages"]) == 100 and batch["more"] is True
    await first.close()  # gone before acking: the batch must come again

    second = await connect(bob)
    again = await second.expect("queued_messages")
    assert again["messages"] == batch["messages"] and again["cursor"] == batch["cursor"]
    await second.send({"type": "ack_queued", "upTo": again["cursor"]})
    rest = await drain_queue(second)  # each ack brings the next batch
    assert [len(b["messages"]) for b in rest] == [100, 50] and rest[-1]["more"] is False
    received = [m for b in [again, *rest] for m in b["messages"]]
    assert [m["seq"] for m in received] == list(range(1, 251))
    assert [m["id"] for m in received] == [m["id"] for m in sent]
    assert (await second.request({"type": "ping"}, "pong"))["type"] == "pong"
    await second.close()
    await _depth_reaches(redis_client, depth)  # every acked entry counted out
    await redis_client.aclose()

    third = await connect(bob)
    with pytest.raises(TimeoutError):
        await third.expect("queued_messages", timeout=1.5)


async def test_two_devices_draining_together_see_every_message(connect) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    conversation = await create_conversation(a, bob)
    await _send_many(a, conversation["id"], 150)
    phone, laptop = await connect(bob), await connect(bob)
    # Both devices receive the first batch before either acks it.
    firsts = [await device.expect("queued_messages") for device in (phone, laptop)]
    assert firsts[0]["messages"] == firsts[1]["messages"]
    # The phone drains everything; the laptop then acks its first batch and
    # is told it fell behind (the phone's acks removed what it never got).
    await phone.send({"type": "ack_queued", "upTo": firsts[0]["cursor"]})
    got = messages_in([firsts[0], *await drain_queue(phone)])
    assert sorted(m["seq"] for m in got.values()) == list(range(1, 151))
    await laptop.send({"type": "ack_queued", "upTo": firsts[1]["cursor"]})
    assert (await laptop.expect("sync_required"))["conversationIds"] == []
    got = messages_in([firsts[1], *await sync(laptop, {conversation["id"]: 100})])
    assert sorted(m["seq"] for m in got.values()) == list(range(1, 151))
    # A device connecting now finds the queue empty, and sync gives it everything.
    tablet = await connect(bob)
    with pytest.raises(TimeoutError):
        await tablet.expect("queued_messages", timeout=1)
    got = messages_in(await sync(tablet, {conversation["id"]: 0}))
    assert sorted(m["seq"] for m in got.values()) == list(range(1, 151))


async def test_queue_overflow_asks_for_sync_and_sync_restores_everything(fresh_stack) -> None:
    from tests.support.client import ChatClient

    gateway = fresh_stack.start("gateway")
    fresh_stack.start("delivery", CHAT_OFFLINE_QUEUE_MAX="20")
    fresh_stack.start("presence")
    alice, bob = uid("alice"), uid("bob")
    a = await ChatClient.connect(gateway.ws_url, alice)
    try:
        first = await create_conversation(a, bob)
        second = await create_conversation(a, bob)
        await _send_many(a, first["id"], 50, "f")
        await _send_many(a, second["id"], 5, "s")
        b = await ChatClient.connect(gateway.ws_url, bob)
        required = await b.expect("sync_required")
        assert required["conversationIds"] == [first["id"]]
        batch = await b.expect("queued_messages")
        assert len(batch["messages"]) == 20 and batch["more"] is False
        restored = messages_in(await sync(b, {first["id"]: 0, second["id"]: 0}))
        by_conv = {
            cid: sorted(m["seq"] for m in restored.values() if m["conversationId"] == cid)
            for cid in (first["id"], second["id"])
        }
        assert by_conv == {first["id"]: list(range(1, 51)), second["id"]: list(range(1, 6))}
        await b.close()
    finally:
        await a.close()


async def test_read_receipts_are_monotonic_and_drive_unread(connect) -> None:
    alice, bob = uid("alice"), uid("bob")
    a, b = await connect(alice), await connect(bob)
    conversation = await create_conversation(a, bob)
    sent = await _send_many(a, conversation["id"], 5)
    await b.send({"type": "read_receipt", "messageId": sent[2]["id"]})
    receipt = await a.expect("read_receipt")
    assert (
        receipt["userId"] == bob and receipt["seq"] == 3 and receipt["messageId"] == sent[2]["id"]
    )
    assert receipt["conversationId"] == conversation["id"] and receipt["readAt"] > 0
    # Older receipt: the marker does not move back and nobody is told.
    await b.send({"type": "read_receipt", "conversationId": conversation["id"], "seq": 1})
    listing = await b.request({"type": "list_conversations"}, "conversations")
    (entry,) = [c for c in listing["conversations"] if c["id"] == conversation["id"]]
    assert entry["unreadCount"] == 2
    with pytest.raises(TimeoutError):
        await a.expect("read_receipt", timeout=0.5)
    await b.send({"type": "read_receipt", "conversationId": conversation["id"], "seq": 5})
    assert (await a.expect("read_receipt"))["seq"] == 5
    listing = await b.request({"type": "list_conversations"}, "conversations")
    (entry,) = [c for c in listing["conversations"] if c["id"] == conversation["id"]]
    assert entry["unreadCount"] == 0
    await b.send({"type": "read_receipt", "messageId": "nope", "requestId": "x"})
    assert (await b.expect("error"))["code"] == "MESSAGE_NOT_FOUND"
    m = await connect(uid("mallory"))
    await m.send({"type": "read_receipt", "messageId": sent[0]["id"], "requestId": "y"})
    assert (await m.expect("error"))["code"] == "NOT_A_MEMBER"


async def test_sync_refuses_non_members_and_completes(connect) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    conversation = await create_conversation(a, bob)
    await _send_many(a, conversation["id"], 3)
    m = await connect(uid("mallory"))
    await m.send({"type": "sync", "conversations": {conversation["id"]: 0}, "requestId": "s"})
    assert (await m.expect("error", requestId="s"))["code"] == "NOT_A_MEMBER"
    await m.expect("sync_complete", requestId="s")
    assert not m.drain("history")
    await asyncio.sleep(0)
