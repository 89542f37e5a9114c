"""Configuration modes: persistence off (benchmarks), development token endpoint."""

from __future__ import annotations

import json
import urllib.request

from tests.support.chat import create_conversation, send, uid
from tests.support.client import ChatClient


async def test_persistence_off_still_delivers_in_order_but_stores_no_message(
    fresh_stack, mongo
) -> None:
    services = fresh_stack.start_all(CHAT_PERSISTENCE="0")
    gateway = services["gateway"]
    alice, bob = uid("alice"), uid("bob")
    a = await ChatClient.connect(gateway.ws_url, alice)
    b = await ChatClient.connect(gateway.ws_url, bob)
    try:
        conversation = await create_conversation(a, bob)
        seqs = [(await send(a, conversation["id"], f"m{i}"))["message"]["seq"] for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert [(await b.expect("message"))["message"]["seq"] for _ in range(5)] == seqs
        stored = await mongo[fresh_stack.db_name].messages.count_documents({})
        assert stored == 0
    finally:
        await a.close()
        await b.close()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


async def test_dev_token_only_in_dev_mode(fresh_stack) -> None:
    dev = fresh_stack.start("gateway", CHAT_DEV_MODE="1")
    prod = fresh_stack.start("gateway", CHAT_DEV_MODE="0")
    fresh_stack.start("presence")
    status, body = _get(f"{dev.base_url}/dev/token?user=alice")
    assert status == 200 and body["userId"] == "alice"
    client = await ChatClient.connect(dev.ws_url, "alice", token=body["token"])
    assert client.connected["userId"] == "alice"
    await client.close()
    assert _get(f"{dev.base_url}/dev/token?user=bad%20name")[0] == 400
    assert _get(f"{prod.base_url}/dev/token?user=alice")[0] == 404
    status, page = prod.http_get("/")
    assert status == 200 and b"<html" in page.lower()
