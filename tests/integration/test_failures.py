"""Failures injected for real: kill -9, Redis restart, MongoDB stopped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.chat import create_conversation, send_until_acked, uid, until
from tests.support.client import ChatClient
from tests.support.servers import FerretDB, RedisServer
from tests.support.stack import Stack
from tests.support.sync import drain_queue, last_seqs, messages_in, sync


def _answers(client: ChatClient) -> dict[str, dict[str, Any]]:
    return {
        f["requestId"]: f
        for f in client.frames
        if f.get("type") in ("message_ack", "error") and str(f.get("requestId", "")).startswith("q")
    }


async def _recover(client: ChatClient, conversations: list[str]) -> dict[str, dict[str, Any]]:
    """What a reconnecting member ends up with: live + queue + sync, deduped."""
    got = messages_in(client.frames)
    got.update(messages_in(await drain_queue(client)))
    got.update(messages_in(await sync(client, last_seqs(got, conversations))))
    return got


async def test_kill9_delivery_with_offline_members(fresh_stack, mongo) -> None:
    services = fresh_stack.start_all()
    gateway, delivery = services["gateway"], services["delivery"]
    alice = uid("alice")
    members = [uid("offline") for _ in range(10)]
    sender = await ChatClient.connect(gateway.ws_url, alice)
    try:
        conversations = [(await create_conversation(sender, m))["id"] for m in members]
        total = 2000
        for i in range(total):
            cid = conversations[i % len(conversations)]
            await sender.send(
                {
                    "type": "send_message",
                    "conversationId": cid,
                    "content": f"c{i}",
                    "clientMessageId": f"k{i}",
                    "requestId": f"q{i}",
                }
            )
        await until(lambda: len(_answers(sender)) >= 400, 30)
        delivery.kill9()
        fresh_stack.restart(delivery)
        await until(lambda: len(_answers(sender)) >= total, 90)
        answers = _answers(sender)
        errors = [a for a in answers.values() if a["type"] == "error"]
        assert not errors, errors[:3]
        acked = {a["message"]["id"]: a["message"] for a in answers.values()}
        db = mongo[fresh_stack.db_name]
        for cid in conversations:
            stored = await db.messages.find({"conversationId": cid}).to_list(None)
            assert sorted(d["seq"] for d in stored) == list(range(1, len(stored) + 1))
            assert len(stored) == total // len(conversations)
        assert await db.messages.count_documents({"_id": {"$in": list(acked)}}) == len(acked)
        # Every offline member gets every message of their conversation back.
        for member, cid in zip(members, conversations, strict=True):
            client = await ChatClient.connect(gateway.ws_url, member)
            try:
                got = await _recover(client, [cid])
            finally:
                await client.close()
            expected = {m["id"] for m in acked.values() if m["conversationId"] == cid}
            assert {m["id"] for m in got.values()} == expected
    finally:
        await sender.close()


async def test_kill9_gateway_while_pushing_then_sync_closes_the_gap(fresh_stack) -> None:
    gw_a = fresh_stack.start("gateway")
    gw_b = fresh_stack.start("gateway")
    fresh_stack.start("delivery")
    fresh_stack.start("presence")
    alice, bob = uid("alice"), uid("bob")
    sender = await ChatClient.connect(gw_b.ws_url, alice)
    bob_a = await ChatClient.connect(gw_a.ws_url, bob)
    try:
        cid = (await create_conversation(sender, bob))["id"]
        total = 400
        for i in range(total):
            await sender.send(
                {
                    "type": "send_message",
                    "conversationId": cid,
                    "content": f"g{i}",
                    "requestId": f"q{i}",
                }
            )
            if i == 150:
                gw_a.kill9()
        await until(lambda: len(_answers(sender)) >= total, 60)
        assert all(a["type"] == "message_ack" for a in _answers(sender).values())
        seen = messages_in(bob_a.frames)
        # Bob reconnects through the surviving gateway and closes the gap.
        bob_b = await ChatClient.connect(gw_b.ws_url, bob)
        try:
            got = dict(seen)
            got.update(messages_in(bob_b.frames))
            got.update(messages_in(await sync(bob_b, last_seqs(got, [cid]))))
        finally:
            await bob_b.close()
        assert sorted(m["seq"] for m in got.values()) == list(range(1, total + 1))
        assert len(seen) < total  # the crash really cut the live stream
    finally:
        await sender.close()
        await bob_a.close()


async def test_redis_restart_loses_no_acked_message(workdir, ferretdb, mongo) -> None:
    server = RedisServer(workdir / f"redis-aof-{uid('r')}", appendonly=True)
    server.start()
    stack = Stack(server.url, ferretdb.uri, workdir / uid("redis-restart"))
    try:
        gateway = stack.start_all()["gateway"]
        alice, bob = uid("alice"), uid("bob")
        sender = await ChatClient.connect(gateway.ws_url, alice)
        receiver = await ChatClient.connect(gateway.ws_url, bob)
        cid = (await create_conversation(sender, bob))["id"]
        acked: dict[str, dict] = {}
        total, restarted = 300, False
        for i in range(total):
            # A client retries with the same clientMessageId until it is acked.
            message = await send_until_acked(sender, cid, f"r{i}")
            acked[message["id"]] = message
            if i == 100 and not restarted:
                server.kill9()
                server.start()  # same port, same AOF directory
                restarted = True
        assert len(acked) == total
        stored = await mongo[stack.db_name].messages.find({"conversationId": cid}).to_list(None)
        assert {d["_id"] for d in stored} == set(acked)
        assert sorted(d["seq"] for d in stored) == list(range(1, total + 1))
        # The receiver was told to resync, and sync makes it whole.
        await receiver.expect("sync_required", timeout=20)
        got = messages_in(receiver.frames)
        got.update(messages_in(await sync(receiver, last_seqs(got, [cid]))))
        assert set(got) == set(acked)
        await sender.close()
        await receiver.close()
    finally:
        stack.stop()
        server.stop()


async def test_mongodb_stopped_answers_unavailable_and_recovers(
    workdir, redis_server, mongo
) -> None:
    store = FerretDB(workdir / uid("ferret-stop"))
    store.start()
    stack = Stack(
        redis_server.url, store.uri, workdir / uid("mongo-stop"), CHAT_MONGODB_TIMEOUT_MS="1000"
    )
    try:
        gateway = stack.start_all()["gateway"]
        alice, bob = uid("alice"), uid("bob")
        sender = await ChatClient.connect(gateway.ws_url, alice)
        cid = (await create_conversation(sender, bob))["id"]
        first = await sender.request(
            {"type": "send_message", "conversationId": cid, "content": "before"}, "message_ack"
        )
        assert first["type"] == "message_ack"
        store.stop()
        during = await sender.request(
            {
                "type": "send_message",
                "conversationId": cid,
                "content": "during",
                "clientMessageId": "d1",
            },
            "message_ack",
            timeout=30,
        )
        assert during["type"] == "error" and during["code"] == "SERVICE_UNAVAILABLE", during
        store.start()  # same port and data directory
        deadline = time.monotonic() + 60
        while True:
            retry = await sender.request(
                {
                    "type": "send_message",
                    "conversationId": cid,
                    "content": "during",
                    "clientMessageId": "d1",
                },
                "message_ack",
                timeout=30,
            )
            if retry["type"] == "message_ack" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert retry["type"] == "message_ack", retry
        assert retry["message"]["seq"] == 2  # nothing was stored for the refused attempt
        client = type(mongo)(store.uri, serverSelectionTimeoutMS=5000)
        try:
            stored = (
                await client[stack.db_name].messages.find({"conversationId": cid}).to_list(None)
            )
        finally:
            await client.close()
        assert sorted(d["content"] for d in stored) == ["before", "during"]
        await sender.close()
    finally:
        stack.stop()
        store.stop()
