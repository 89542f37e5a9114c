"""The core message path over the real four-service stack."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis.asyncio as redis

from services.delivery.store import IN_QUERY_FROM
from shared import keys
from shared.events import Command, encode_event
from shared.protocol import SendMessage
from shared.push import decode_push
from shared.settings import Settings
from tests.support.chat import create_conversation, send, uid


async def test_two_users_chat_and_every_sender_device_sees_it(connect) -> None:
    alice, bob = uid("alice"), uid("bob")
    phone, laptop = await connect(alice), await connect(alice)
    bob_client = await connect(bob)
    conversation = await create_conversation(phone, bob, title="lunch")
    assert sorted(conversation["participantIds"]) == sorted([alice, bob])
    assert conversation["title"] == "lunch" and conversation["lastSeq"] == 0
    # Every participant's devices learn about the conversation.
    assert (await bob_client.expect("conversation"))["conversation"]["id"] == conversation["id"]
    assert (await laptop.expect("conversation"))["conversation"]["id"] == conversation["id"]

    ack = await send(phone, conversation["id"], "hello bob", clientMessageId="c-1")
    assert ack["type"] == "message_ack", ack
    message = ack["message"]
    assert message["seq"] == 1 and message["senderId"] == alice
    assert ack["clientMessageId"] == "c-1"

    for device in (bob_client, laptop):
        pushed = await device.expect("message")
        assert pushed["message"] == message
    # The sending connection gets the ack, not a second copy as a push.
    with pytest.raises(TimeoutError):
        await phone.expect("message", timeout=0.5)

    reply = await send(bob_client, conversation["id"], "hi alice")
    assert reply["message"]["seq"] == 2
    assert (await phone.expect("message"))["message"]["content"] == "hi alice"


async def test_the_ack_rides_on_the_senders_push_unless_the_gateway_predates_it(
    stack, connect
) -> None:
    """``message_ack`` goes on the push to the sender's channel, not a publish of its own;
    a command without ``ack_on_user_channel`` (an older gateway's) gets it on its
    gateway's channel."""
    alice, bob = uid("alice"), uid("bob")
    phone, laptop = await connect(alice), await connect(alice)
    bob_client = await connect(bob)
    conversation = await create_conversation(phone, bob)
    cid = conversation["id"]
    for client in (laptop, bob_client):
        await client.expect("conversation")
    watcher = redis.Redis.from_url(stack.redis_url)  # the stack's database
    pubsub = watcher.pubsub()
    await pubsub.psubscribe(keys.gateway_channel("*"))

    async def replies_until(request_id: str) -> tuple[str, list[dict[str, Any]]]:
        """The frames published on gateway channels up to the one answering ``request_id``."""
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if got is None:
                continue
            frames.append(json.loads(decode_push(got["data"]).frame))
            if frames[-1].get("requestId") == request_id:
                return got["channel"].decode().split(":", 1)[1], frames
        raise AssertionError(f"no reply to {request_id} on a gateway channel: {frames}")

    try:
        ack = await send(phone, cid, "one", requestId="r-new")
        assert ack["type"] == "message_ack" and ack["message"]["seq"] == 1
        assert (await laptop.expect("message"))["message"]["seq"] == 1
        assert (await bob_client.expect("message"))["message"]["seq"] == 1
        # The next reply on the gateway channel is published after that send's
        # pipeline ran (its ack was already read): an ack there would come first.
        missing = await send(phone, "no-such-conversation", "x", requestId="r-missing")
        assert missing["code"] == "CONVERSATION_NOT_FOUND"
        gateway_id, frames = await replies_until("r-missing")
        assert [f["type"] for f in frames] == ["error"], frames

        # What a gateway that predates the flag appends.
        settings = Settings.from_env(stack.env("delivery"))
        old = Command(
            user_id=alice,
            connection_id=phone.connected["connectionId"],
            gateway_id=gateway_id,
            accepted_at=time.time(),
            frame=SendMessage(conversation_id=cid, content="two", request_id="r-old"),
        )
        stream = keys.command_stream(keys.command_partition(cid, settings.command_partitions))
        await watcher.xadd(stream, {keys.STREAM_FIELD: encode_event(old)})
        ack = await phone.expect("message_ack", requestId="r-old")
        assert ack["message"]["seq"] == 2
        _, frames = await replies_until("r-old")
        assert [f["type"] for f in frames] == ["message_ack"], frames
        assert (await laptop.expect("message"))["message"]["seq"] == 2
        with pytest.raises(TimeoutError):
            await phone.expect("message", timeout=0.5)
    finally:
        await pubsub.aclose()
        await watcher.aclose()


async def test_non_member_is_refused(connect) -> None:
    alice, bob, mallory = uid("alice"), uid("bob"), uid("mallory")
    a = await connect(alice)
    m = await connect(mallory)
    conversation = await create_conversation(a, bob)
    reply = await send(m, conversation["id"], "let me in")
    assert reply["type"] == "error" and reply["code"] == "NOT_A_MEMBER", reply
    history = await m.request(
        {"type": "fetch_history", "conversationId": conversation["id"]}, "history"
    )
    assert history["code"] == "NOT_A_MEMBER"
    missing = await send(a, "no-such-conversation", "hello")
    assert missing["code"] == "CONVERSATION_NOT_FOUND"


async def test_history_pages_in_order(connect) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    conversation = await create_conversation(a, bob)
    for i in range(1, 26):
        assert (await send(a, conversation["id"], f"m{i}"))["message"]["seq"] == i

    async def page(**kwargs: int) -> dict:
        reply = await a.request(
            {"type": "fetch_history", "conversationId": conversation["id"], **kwargs}, "history"
        )
        assert reply["type"] == "history", reply
        return reply

    latest = await page(limit=10)
    assert [m["seq"] for m in latest["messages"]] == list(range(16, 26))
    assert latest["hasMore"] is True
    older = await page(limit=10, beforeSeq=16)
    assert [m["seq"] for m in older["messages"]] == list(range(6, 16))
    oldest = await page(limit=10, beforeSeq=6)
    assert [m["seq"] for m in oldest["messages"]] == [1, 2, 3, 4, 5]
    assert oldest["hasMore"] is False
    assert [m["content"] for m in oldest["messages"]] == ["m1", "m2", "m3", "m4", "m5"]
    everything = await page(limit=100)
    assert [m["seq"] for m in everything["messages"]] == list(range(1, 26))


async def test_repeated_client_message_id_gives_the_same_message(connect, mongo, stack) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    b = await connect(bob)
    conversation = await create_conversation(a, bob)
    first = await send(a, conversation["id"], "once", clientMessageId="same")
    second = await send(a, conversation["id"], "once", clientMessageId="same")
    assert second["type"] == "message_ack"
    assert second["message"] == first["message"]
    third = await send(a, conversation["id"], "next")
    assert third["message"]["seq"] == 2
    stored = await mongo[stack.db_name].messages.count_documents(
        {"conversationId": conversation["id"]}
    )
    assert stored == 2
    pushed = [f["message"]["id"] for f in [await b.expect("message") for _ in range(2)]]
    assert first["message"]["id"] in pushed


async def test_client_message_id_reused_in_another_conversation_is_a_new_message(
    connect,
) -> None:
    """The idempotency key is the sender's per conversation: a client that numbers its
    messages per conversation gets a new message in each, and no member of one
    conversation is ever sent a message of another."""
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    a, c = await connect(alice), await connect(carol)
    with_bob = (await create_conversation(a, bob))["id"]
    with_carol = (await create_conversation(a, carol))["id"]
    await c.expect("conversation")
    to_bob = await send(a, with_bob, "for bob only", clientMessageId="1")
    to_carol = await send(a, with_carol, "for carol", clientMessageId="1")
    assert to_carol["message"]["conversationId"] == with_carol
    assert to_carol["message"]["content"] == "for carol"
    assert to_carol["message"]["id"] != to_bob["message"]["id"]
    pushed = await c.expect("message")
    assert pushed["message"]["content"] == "for carol"
    retried = await send(a, with_carol, "for carol", clientMessageId="1")
    assert retried["message"] == to_carol["message"]  # still idempotent per conversation


async def test_list_conversations_reports_last_seq_and_unread(connect) -> None:
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    b = await connect(bob)
    conversation = await create_conversation(a, bob)
    for i in range(3):
        await send(a, conversation["id"], f"m{i}")
    listing = await b.request({"type": "list_conversations"}, "conversations")
    assert listing["type"] == "conversations", listing
    (entry,) = [c for c in listing["conversations"] if c["id"] == conversation["id"]]
    assert entry["lastSeq"] == 3
    assert entry["unreadCount"] == 3


async def test_unread_counts_of_many_conversations(connect) -> None:
    """Read markers of IN_QUERY_FROM or more conversations are read with one query."""
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    b = await connect(bob)
    ids = [(await create_conversation(a, bob))["id"] for _ in range(IN_QUERY_FROM + 8)]
    for cid in ids:
        for i in range(2):
            await send(a, cid, f"m{i}")
    for cid in ids[::2]:
        await b.send({"type": "read_receipt", "conversationId": cid, "seq": 1})
    expected = {cid: 1 if n % 2 == 0 else 2 for n, cid in enumerate(ids)}
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # receipts are handled per partition, not in order with the list
        listing = await b.request({"type": "list_conversations"}, "conversations")
        unread = {c["id"]: c["unreadCount"] for c in listing["conversations"]}
        if unread == expected:
            break
        assert asyncio.get_running_loop().time() < deadline, unread
        await asyncio.sleep(0.1)


async def test_ping_pong(connect) -> None:
    a = await connect(uid("alice"))
    reply = await a.request({"type": "ping"}, "pong")
    assert reply["type"] == "pong"
