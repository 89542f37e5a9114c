"""Configuration modes: persistence off (benchmarks), development token endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from shared import keys
from shared.redis_client import RedisClient
from tests.support.chat import create_conversation, pair_on_own_stack, send, uid, until
from tests.support.client import ChatClient
from tests.support.stack import Service, Stack


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


async def _seqs(sender: ChatClient, receiver: ChatClient, cid: str, count: int) -> list[int]:
    """Send ``count`` messages; their seqs, as acked and as pushed to the other member."""
    acked = [
        (await sender.request(_frame(cid, f"m{i}"), "message_ack", timeout=30))["message"]["seq"]
        for i in range(count)
    ]
    pushed = [(await receiver.expect("message", timeout=30))["message"]["seq"] for _ in acked]
    assert pushed == acked
    return acked


def _frame(cid: str, content: str) -> dict[str, str]:
    return {"type": "send_message", "conversationId": cid, "content": content}


def _conflicts(delivery: Service) -> float:
    status, body = delivery.http_get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "chat_delivery_seq_conflicts":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("no seq conflict counter")


def _pair_without_store(
    stack: Stack, **overrides: str
) -> contextlib.AbstractAsyncContextManager[
    tuple[dict[str, Service], ChatClient, ChatClient, str, RedisClient]
]:
    """Persistence off: the services, two members of a new conversation, its id, and Redis."""
    return pair_on_own_stack(stack, CHAT_PERSISTENCE="0", **overrides)


async def test_persistence_off_seqs_go_on_after_delivery_is_killed(fresh_stack) -> None:
    """The owner numbers in memory; the counter it keeps in Redis lets the next owner go on."""
    async with _pair_without_store(fresh_stack, CHAT_LEASE_TTL_MS="2000") as (
        services,
        a,
        b,
        cid,
        store,
    ):
        assert await _seqs(a, b, cid, 3) == [1, 2, 3]
        assert await store.hget(keys.conversation_head_key(cid), "seq") == b"3"
        services["delivery"].kill9()
        fresh_stack.restart(services["delivery"])
        acked = [
            (await a.request(_frame(cid, f"n{i}"), "message_ack", timeout=30))["message"]["seq"]
            for i in range(2)
        ]
        # The last batch's XACK rides on the read after it, so the new owner may
        # redo that entry first: with no store to find it in, it is numbered
        # again (4, the same message id). No seq repeats, none is skipped.
        assert acked[1] == acked[0] + 1 and acked[0] in (4, 5), acked
        pushed = [
            (await b.expect("message", timeout=30))["message"]["seq"] for _ in range(acked[1] - 3)
        ]
        assert pushed == list(range(4, acked[1] + 1))
        assert await store.hget(keys.conversation_head_key(cid), "seq") == str(acked[1]).encode()


async def test_persistence_off_counter_moved_by_another_owner_is_read_again(fresh_stack) -> None:
    """With no store to arbitrate, a counter moved behind the owner's back (a second
    owner racing) is noticed on the batch's own advance: counted, and read again."""
    async with _pair_without_store(fresh_stack) as (services, a, b, cid, store):
        assert await _seqs(a, b, cid, 1) == [1]
        assert _conflicts(services["delivery"]) == 0
        await store.hset(keys.conversation_head_key(cid), "seq", 10)  # another owner numbered 2..10
        # The owner does not know yet: its next message repeats a seq, and its
        # advance (never down) finds 10 where it expected 1.
        assert await _seqs(a, b, cid, 1) == [2]
        assert await store.hget(keys.conversation_head_key(cid), "seq") == b"10"
        assert _conflicts(services["delivery"]) == 1
        assert await _seqs(a, b, cid, 2) == [11, 12]
        assert await store.hget(keys.conversation_head_key(cid), "seq") == b"12"


async def test_persistence_off_batch_whose_pipeline_failed_is_renumbered_from_the_counter(
    fresh_stack,
) -> None:
    """A batch whose fan-out pipeline Redis refused is redone; its messages get the
    seqs the counter says are next, not ones past those it gave out in memory."""
    async with _pair_without_store(fresh_stack) as (_services, a, b, cid, store):
        assert await _seqs(a, b, cid, 1) == [1]
        counter = keys.conversation_head_key(cid)
        await store.set(counter, "not a number")  # the batch's advance now fails (WRONGTYPE)
        errors = await _errors(store)
        await a.send({**_frame(cid, "redone"), "requestId": "redone"})
        # Refused at least once (the batch stays pending and is redone), then let through.
        deadline = asyncio.get_running_loop().time() + 10
        while await _errors(store) == errors:
            assert asyncio.get_running_loop().time() < deadline, "the batch was never tried"
            await asyncio.sleep(0.05)
        await store.delete(counter)
        await store.hset(counter, "seq", 1)

        def acks() -> list[int]:
            return [
                f["message"]["seq"]
                for f in a.frames
                if f.get("type") == "message_ack" and f.get("requestId") == "redone"
            ]

        # The refused pipeline's publishes went out (seq 2); the redo numbers the
        # message from the counter again: 2 once more, never 3.
        await until(lambda: len(acks()) == 2, 30)
        assert acks() == [2, 2]
        assert await store.hget(counter, "seq") == b"2"
        pushed = lambda: [f["message"]["seq"] for f in b.frames if f.get("type") == "message"]  # noqa: E731
        await until(lambda: len(pushed()) == 2, 30)
        assert pushed() == [2, 2]


async def _errors(store: RedisClient) -> int:
    """Error replies Redis has sent so far (to anybody)."""
    return int((await store.info("stats"))["total_error_replies"])


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
