"""Malformed frames get the protocol's error code and the connection keeps working."""

from __future__ import annotations

import json

import aiohttp
import pytest

from shared.tokens import make_token
from tests.support.chat import create_conversation, uid
from tests.support.client import ChatClient, token_for

CASES = [
    ("not json", "INVALID_FORMAT"),
    ("[1, 2, 3]", "INVALID_FORMAT"),
    ('"a string"', "INVALID_FORMAT"),
    ('{"conversationId": "c"}', "INVALID_FORMAT"),
    ('{"type": 42}', "INVALID_FORMAT"),
    ('{"type": "launch_rockets"}', "UNKNOWN_MESSAGE_TYPE"),
    ('{"type": "send_message", "content": "hi"}', "INVALID_MESSAGE"),
    ('{"type": "send_message", "conversationId": 7, "content": "hi"}', "INVALID_MESSAGE"),
    (
        '{"type": "send_message", "conversationId": {"$ne": null}, "content": "hi"}',
        "INVALID_MESSAGE",
    ),
    ('{"type": "send_message", "conversationId": "c", "content": ""}', "INVALID_MESSAGE"),
    (
        json.dumps({"type": "send_message", "conversationId": "c", "content": "x" * 4001}),
        "INVALID_MESSAGE",
    ),
    ('{"type": "fetch_history", "conversationId": "c", "limit": 1000}', "INVALID_MESSAGE"),
    ('{"type": "fetch_history", "conversationId": "c", "limit": -1}', "INVALID_MESSAGE"),
    ('{"type": "create_conversation", "participantIds": "bob"}', "INVALID_MESSAGE"),
    (
        '{"type": "subscribe_presence", "userIds": [' + ",".join(['"u"'] * 201) + "]}",
        "INVALID_MESSAGE",
    ),
    ('{"type": "typing_indicator", "conversationId": "c", "isTyping": "yes"}', "INVALID_MESSAGE"),
]


@pytest.mark.parametrize(("raw", "code"), CASES)
async def test_malformed_frame_gets_its_error_code(connect, raw: str, code: str) -> None:
    client = await connect(uid("fuzzy"))
    await client.send_raw(raw)
    error = await client.expect("error")
    assert error["code"] == code, (raw[:80], error)
    # The connection still works after the error.
    assert (await client.request({"type": "ping"}, "pong"))["type"] == "pong"


async def test_error_echoes_request_id(connect) -> None:
    client = await connect(uid("fuzzy"))
    await client.send_raw('{"type": "send_message", "requestId": "abc", "conversationId": 1}')
    error = await client.expect("error")
    assert error["requestId"] == "abc" and error["code"] == "INVALID_MESSAGE"
    assert "conversationId" in error["message"]


async def test_participant_list_must_name_someone_else(connect) -> None:
    alice = uid("alice")
    client = await connect(alice)
    reply = await client.request(
        {"type": "create_conversation", "participantIds": [alice]}, "conversation"
    )
    assert reply["code"] == "INVALID_MESSAGE"
    ok = await create_conversation(client, uid("bob"))
    assert ok["id"]


async def test_oversize_frame_closes_1009(connect) -> None:
    client = await connect(uid("big"))
    await client.send_raw(json.dumps({"type": "ping", "pad": "x" * 70_000}))
    assert await client.wait_closed() == 1009


async def test_binary_frame_closes_1003(connect) -> None:
    client = await connect(uid("binary"))
    await client.ws.send_bytes(b"\x00\x01")
    assert await client.wait_closed() == 1003


async def test_other_connections_unaffected_by_bad_input(connect) -> None:
    bad, good = await connect(uid("bad")), await connect(uid("good"))
    for _ in range(50):
        await bad.send_raw("{{{{")
    assert (await good.request({"type": "ping"}, "pong"))["type"] == "pong"
    assert len([await bad.expect("error") for _ in range(50)]) == 50


async def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "not-a-jwt",
        make_token("eve", "some-other-secret-that-is-long-enough"),
        token_for("eve", ttl_seconds=-60),
    ],
    ids=["missing", "malformed", "wrong-signature", "expired"],
)
async def test_bad_token_gets_401_before_upgrade(stack, token: str | None) -> None:
    gateway = next(s for s in stack.services if s.service == "gateway")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body = await _status(gateway.ws_url.replace("ws://", "http://"), headers)
    assert status == 401
    assert body["error"] and body["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await ChatClient.connect(gateway.ws_url, "eve", token=token or "")
    assert info.value.status == 401


async def test_token_in_query_parameter(stack) -> None:
    gateway = next(s for s in stack.services if s.service == "gateway")
    user = uid("query")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{gateway.ws_url}?token={token_for(user)}")
        first = json.loads((await ws.receive()).data)
        assert first["type"] == "connected" and first["userId"] == user
        assert first["heartbeatIntervalMs"] > 0 and first["connectionId"]
        await ws.close()
