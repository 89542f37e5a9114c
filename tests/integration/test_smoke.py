from __future__ import annotations

import uuid


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_two_users_chat(connect) -> None:  # type: ignore[no-untyped-def]
    alice, bob = uid("alice"), uid("bob")
    a1 = await connect(alice)
    a2 = await connect(alice)
    b = await connect(bob)
    reply = await a1.request({"type": "create_conversation", "participantIds": [bob]}, "conversation")
    assert reply["type"] == "conversation", reply
    conv = reply["conversation"]
    assert sorted(conv["participantIds"]) == sorted([alice, bob])
    await b.expect("conversation")
    ack = await a1.request(
        {"type": "send_message", "conversationId": conv["id"], "content": "hello bob", "clientMessageId": "m1"},
        "message_ack",
    )
    assert ack["type"] == "message_ack", ack
    assert ack["message"]["seq"] == 1
    pushed = await b.expect("message")
    assert pushed["message"]["content"] == "hello bob"
    mine = await a2.expect("message")
    assert mine["message"]["id"] == ack["message"]["id"]
