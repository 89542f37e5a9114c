"""Helpers shared by integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from services.delivery.offline import queued_form
from services.delivery.outbox import Outbox
from shared.protocol import Message, MessagePush, encode
from shared.redis_client import RedisClient
from shared.settings import Settings
from tests.support.client import ChatClient
from tests.support.stack import Service, Stack


def uid(prefix: str) -> str:
    """A user or client id unique to this run, so tests never see each other."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def message(conversation_id: str, seq: int, sender_id: str = "alice") -> Message:
    """A message as delivery makes it, for tests below the client protocol."""
    return Message(
        id=f"{conversation_id}-{seq}",
        conversation_id=conversation_id,
        seq=seq,
        sender_id=sender_id,
        content=f"m{seq}",
        content_type="text",
        sent_at=seq,
    )


async def push_message(
    client: Any, settings: Settings, user_ids: list[str], msg: Message
) -> list[tuple[str, int]]:
    """Fan ``msg`` out to ``user_ids`` as delivery does; (member, entries pushed
    out) for each member it was queued for (nobody received it)."""
    outbox = Outbox(client, settings)
    frame = encode(MessagePush(message=msg))
    outbox.push_message(user_ids, frame, msg.conversation_id, queued_form(msg))
    return await outbox.flush()


async def create_conversation(
    client: ChatClient, *others: str, title: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "create_conversation", "participantIds": list(others)}
    if title is not None:
        frame["title"] = title
    reply = await client.request(frame, "conversation")
    assert reply["type"] == "conversation", reply
    return reply["conversation"]  # type: ignore[no-any-return]


async def send(
    client: ChatClient, conversation_id: str, content: str, **extra: Any
) -> dict[str, Any]:
    reply = await client.request(
        {"type": "send_message", "conversationId": conversation_id, "content": content, **extra},
        "message_ack",
    )
    return reply


async def send_until_acked(client: ChatClient, cid: str, content: str) -> dict[str, Any]:
    """What a client does: retry with the same clientMessageId until acked.

    A pushed answer can be lost while Redis restarts or fails over (pub/sub
    is at-most-once); the retry is answered from the stored message.
    """
    deadline = time.monotonic() + 90
    while True:
        try:
            reply = await client.request(
                {
                    "type": "send_message",
                    "conversationId": cid,
                    "content": content,
                    "clientMessageId": content,
                },
                "message_ack",
                timeout=8,
            )
            if reply["type"] == "message_ack":
                return reply["message"]  # type: ignore[no-any-return]
            assert reply["code"] == "SERVICE_UNAVAILABLE", reply
        except TimeoutError:
            pass  # the append or its answer was lost in the failover: retry
        assert time.monotonic() < deadline, f"{content} never acked"
        await asyncio.sleep(0.2)


async def until(predicate: Any, timeout: float) -> None:
    """Poll ``predicate`` (a plain function) until true, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def chat_through(stack: Stack) -> None:
    """Start the four services on ``stack``; a message and a presence change go through."""
    clients: list[ChatClient] = []
    try:
        gateway = stack.start_all()["gateway"]
        alice, bob = uid("alice"), uid("bob")
        for user in (alice, bob):
            clients.append(await ChatClient.connect(gateway.ws_url, user))
        a, b = clients
        conversation = await create_conversation(a, bob)
        ack = await send(a, conversation["id"], "sealed")
        assert ack["type"] == "message_ack", ack
        pushed = await b.expect("message")
        assert pushed["message"] == ack["message"]
        # Presence consumed alice's connection event: bob sees her online.
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            reply = await b.request(
                {"type": "subscribe_presence", "userIds": [alice]}, "presence_state"
            )
            if reply["users"][alice]["status"] == "online":
                break
            assert asyncio.get_running_loop().time() < deadline, reply
            await asyncio.sleep(0.1)
    finally:
        for client in clients:
            await client.close()
        stack.stop()


@contextlib.asynccontextmanager
async def pair_on_own_stack(
    stack: Stack, **overrides: str
) -> AsyncIterator[tuple[dict[str, Service], ChatClient, ChatClient, str, RedisClient]]:
    """``stack`` started (with ``overrides``): its services, two members of a new
    conversation, its id, and a client of its Redis; all closed at the end."""
    stack.overrides.update(overrides)
    services = stack.start_all()
    a = await ChatClient.connect(services["gateway"].ws_url, uid("alice"))
    bob = uid("bob")
    b = await ChatClient.connect(services["gateway"].ws_url, bob)
    store = stack.redis_client()
    try:
        cid = (await create_conversation(a, bob))["id"]
        yield services, a, b, cid, store
    finally:
        await store.aclose()
        await a.close()
        await b.close()
