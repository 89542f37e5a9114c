"""Streams near their cap: requests refused, connection events held, none trimmed unread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog.testing

from services.gateway import backlog as backlog_module
from shared import keys
from shared.redis_client import RedisClient
from shared.settings import Settings
from tests.support.chat import create_conversation, send, uid, until
from tests.support.client import ChatClient

CAP = 300  # CHAT_COMMAND_STREAM_MAXLEN: the gateway refuses from 270 entries on
SENDS = 500


async def test_a_full_command_stream_refuses_requests_instead_of_dropping_them(
    fresh_stack,
) -> None:
    services = fresh_stack.start_all(CHAT_COMMAND_STREAM_MAXLEN=str(CAP))
    gateway, delivery = services["gateway"], services["delivery"]
    sender = await ChatClient.connect(gateway.ws_url, uid("alice"))
    redis_client = fresh_stack.redis_client()
    try:
        cid = (await create_conversation(sender, uid("bob")))["id"]
        stream = keys.command_stream(keys.command_partition(cid, Settings().command_partitions))
        delivery.stop()  # nothing reads the stream: it only grows
        for i in range(SENDS):
            await sender.send(
                {
                    "type": "send_message",
                    "conversationId": cid,
                    "content": f"m{i}",
                    "clientMessageId": f"c{i}",
                    "requestId": f"q{i}",
                }
            )
        # Frames are handled in order: once the pong is here, every send was
        # appended or refused.
        await sender.request({"type": "ping"}, "pong")
        refused = {
            f["requestId"]: f
            for f in sender.frames
            if f.get("type") == "error" and f["code"] == "SERVICE_UNAVAILABLE"
        }
        assert refused, "nothing refused: the stream filled past its high-water mark"
        assert all(f["retryAfterMs"] == 1000 for f in refused.values())
        assert await redis_client.xlen(stream) <= CAP
        _, body = gateway.http_get("/metrics")
        assert f"chat_gateway_backlog_refusals_total {float(len(refused))}".encode() in body

        # Delivery back: every send the gateway took is answered. Without the
        # high-water mark the cap trimmed the oldest of them, which nobody answered.
        fresh_stack.restart(delivery)

        def answered() -> set[str]:
            return {f["requestId"] for f in sender.frames if f.get("type") == "message_ack"}

        expected = {f"q{i}" for i in range(SENDS)} - set(refused)
        try:
            await until(lambda: answered() >= expected, 30)
        except TimeoutError:
            missing = sorted(expected - answered(), key=lambda r: int(r[1:]))
            raise AssertionError(f"{len(missing)} sends never answered: {missing[:5]}…") from None
        assert not answered() & set(refused)
        # Once the backlog is handled (and trimmed), the gateway takes requests
        # again: what a client does, retrying after retryAfterMs.
        deadline = time.monotonic() + 20
        while True:
            after = {"type": "send_message", "conversationId": cid, "content": "after"}
            reply = await sender.request({**after, "clientMessageId": "after"}, "message_ack")
            if reply["type"] == "message_ack":
                break
            assert reply["code"] == "SERVICE_UNAVAILABLE", reply
            assert time.monotonic() < deadline, "still refused after the backlog was handled"
            await asyncio.sleep(reply["retryAfterMs"] / 1000)
    finally:
        await sender.close()
        await redis_client.aclose()


EVENTS_CAP = 100  # CHAT_EVENT_STREAM_MAXLEN: events are held from 90 entries on


async def test_connection_events_are_held_near_the_cap_never_trimmed_unread(fresh_stack) -> None:
    """Presence down while users come and go: its view converges to the truth after.

    Without holding, the cap trimmed the oldest events presence had not
    read (here the closes of users who left first): they stayed online.
    """
    services = fresh_stack.start_all(CHAT_EVENT_STREAM_MAXLEN=str(EVENTS_CAP))
    gateway, presence = services["gateway"], services["presence"]
    redis_client = fresh_stack.redis_client()
    stream = keys.connection_event_stream()
    clients: list[ChatClient] = []

    def held() -> float:
        _, body = gateway.http_get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith("chat_gateway_held_connection_events "):
                return float(line.split()[1])
        raise AssertionError("no held-events gauge")

    try:
        early = [uid("early") for _ in range(20)]
        for user in early:
            clients.append(await ChatClient.connect(gateway.ws_url, user))
        await _until(lambda: _online(redis_client), set(early), 20)
        # A message for a user who connects only while events are held.
        late = [uid("late") for _ in range(20)]
        conversation = await create_conversation(clients[0], late[-1])
        ack = await send(clients[0], conversation["id"], "while you were away")
        assert ack["type"] == "message_ack", ack

        presence.stop()  # nothing reads the presence group: the stream only grows
        left = early[:10]
        for client in clients[:10]:
            await client.close()
        for _ in range(150):  # users who come and go while presence is down
            passing = await ChatClient.connect(gateway.ws_url, uid("passing"))
            await passing.close()
        for user in late:
            clients.append(await ChatClient.connect(gateway.ws_url, user))
        # At most the closes of those who left and the opens of the late
        # users: a connection that came and went while held is owed nothing.
        assert 20 <= held() <= 30, held()
        assert await redis_client.xlen(stream) <= EVENTS_CAP

        fresh_stack.restart(presence)
        await _until(lambda: _online(redis_client), set(early) - set(left) | set(late), 30)
        deadline = time.monotonic() + 20
        while held():
            assert time.monotonic() < deadline, "held events never sent"
            await asyncio.sleep(0.1)
        # Said once each, though held opens and closes cancelled out all along.
        log = gateway.log_path.read_text()
        assert log.count("connection events held back") == 1
        assert log.count("held connection events sent") == 1
        # Delivery heard of the late connection too: it drained the queue there.
        queued = await clients[-1].expect("queued_messages", timeout=10)
        assert [m["content"] for m in queued["messages"]] == ["while you were away"]
    finally:
        for client in clients:
            await client.close()
        await redis_client.aclose()


async def test_a_gateway_stopping_with_events_held_is_swept_by_presence(fresh_stack) -> None:
    """Its held closes never reach the stream: it stays registered for presence's sweep.

    Retiring it as usual would leave every user whose close was held online
    for good.
    """
    services = fresh_stack.start_all(
        CHAT_EVENT_STREAM_MAXLEN=str(EVENTS_CAP),
        CHAT_GATEWAY_TTL_SECONDS="3",
        CHAT_DRAIN_SECONDS="0.5",
    )
    gateway, presence = services["gateway"], services["presence"]
    redis_client = fresh_stack.redis_client()
    users = [uid("user") for _ in range(20)]
    clients = [await ChatClient.connect(gateway.ws_url, user) for user in users]
    try:
        await _until(lambda: _online(redis_client), set(users), 20)
        presence.stop()
        for _ in range(60):
            passing = await ChatClient.connect(gateway.ws_url, uid("passing"))
            await passing.close()
        assert await redis_client.xlen(keys.connection_event_stream()) <= EVENTS_CAP
        gateway.stop()  # drains: the 20 closes are held behind the full stream
        assert await redis_client.zscore(keys.gateways_key(), gateway.instance_id) is not None
        fresh_stack.restart(presence)
        await _until(lambda: _online(redis_client), set(), 30)
    finally:
        for client in clients:
            await client.close()
        await redis_client.aclose()


async def test_a_defect_after_a_length_check_does_not_end_the_checks(client, monkeypatch) -> None:
    """The loop outlives an error that is not Redis's: otherwise counts stop at their last
    value and a partition at its mark refuses requests for good."""
    monkeypatch.setattr(backlog_module, "CHECK_SECONDS", 0.01)
    backlog = backlog_module.Backlog(client, 1, CAP, EVENTS_CAP)
    checks = 0

    def defect() -> None:
        nonlocal checks
        checks += 1
        if checks == 1:
            raise RuntimeError("injected defect")

    backlog.on_refresh = defect
    task = asyncio.create_task(backlog.run())
    try:
        with structlog.testing.capture_logs() as logs:
            await until(lambda: checks >= 3, 5)
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "stream length check failed"
        ]
    finally:
        task.cancel()


async def _online(redis_client: RedisClient) -> set[str]:
    return {m.decode() for m in await redis_client.smembers(keys.online_users_key())}


async def _until(
    fetch: Callable[[], Awaitable[set[str]]], expected: set[str], timeout: float
) -> None:
    """Poll ``fetch`` until it returns ``expected``, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while (found := await fetch()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(found - expected)} too many, {len(expected - found)} missing"
            )
        await asyncio.sleep(0.1)
