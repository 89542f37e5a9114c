"""Gateway behaviour: system notifications, slow readers, draining, health."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time

import jwt
import redis.asyncio as redis

from shared import keys
from shared.notify import publish_notification
from shared.push import encode_push
from shared.settings import Settings
from tests.support.chat import uid
from tests.support.client import (
    ChatClient,
    masked_frame,
    raw_websocket,
    received_until_closed,
    server_close_code,
    token_for,
)


async def test_system_notifications_reach_every_connection(stack, connect, redis_server) -> None:
    clients = [await connect(uid("n")) for _ in range(3)]
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    receivers = await publish_notification(settings, "maintenance at 22:00", "warning")
    assert receivers >= 1
    for client in clients:
        note = await client.expect("system_notification")
        assert note["message"] == "maintenance at 22:00" and note["level"] == "warning"
        assert note["timestamp"] > 0
    await publish_notification(settings, "rolling restart", "info", maintenance=True)
    for client in clients:
        assert (await client.expect("system_notification"))["message"] == "rolling restart"


# Several PUBLISHes from one script reach the gateway's pub/sub connection in
# one TCP read (Redis writes a client's output once per event-loop turn).
_PUBLISH_ALL = "for i = 2, #ARGV do redis.call('PUBLISH', ARGV[1], ARGV[i]) end return #ARGV - 1"


def _push_writes(gateway) -> float:  # type: ignore[no-untyped-def]
    _, body = gateway.http_get("/metrics")
    match = re.search(rb"^chat_gateway_push_writes_total ([0-9.e+]+)$", body, re.M)
    assert match, "the gateway exports chat_gateway_push_writes_total"
    return float(match.group(1))


async def test_pushes_of_one_read_go_out_in_order_as_one_write(fresh_stack, redis_server) -> None:
    gateway = fresh_stack.start("gateway")
    user = uid("burst")
    client = await ChatClient.connect(gateway.ws_url, user)
    publisher = redis.Redis.from_url(redis_server.url)
    try:
        frames = [
            json.dumps(
                {"type": "system_notification", "message": f"m{i}", "level": "info", "timestamp": 1}
            ).encode()
            for i in range(5)
        ]
        before = _push_writes(gateway)
        pushes = [encode_push("", frame) for frame in frames]
        assert await publisher.eval(_PUBLISH_ALL, 0, keys.user_channel(user), *pushes) == 5
        got = [(await client.expect("system_notification"))["message"] for _ in frames]
        assert got == [f"m{i}" for i in range(5)]
        # Five frames for one socket from one read: fewer writes than frames
        # (one, unless TCP split the read), the order kept.
        assert 1 <= _push_writes(gateway) - before < 5
    finally:
        await client.close()
        await publisher.aclose()


async def test_a_push_with_a_reply_gives_the_sending_connection_the_reply(
    fresh_stack, redis_server
) -> None:
    """The sender's ack rides on the push to the sender's channel (shared.push)."""
    gateway = fresh_stack.start("gateway")
    user = uid("sender")
    phone = await ChatClient.connect(gateway.ws_url, user)
    laptop = await ChatClient.connect(gateway.ws_url, user)
    publisher = redis.Redis.from_url(redis_server.url)
    try:
        push = json.dumps(
            {"type": "system_notification", "message": "push", "level": "info", "timestamp": 1}
        ).encode()
        reply = json.dumps(
            {"type": "system_notification", "message": "reply", "level": "info", "timestamp": 1}
        ).encode()
        sender = phone.connected["connectionId"]
        envelope = encode_push(sender, push, time.time(), "send_message", reply)
        assert await publisher.publish(keys.user_channel(user), envelope) == 1
        assert (await laptop.expect("system_notification"))["message"] == "push"
        assert (await phone.expect("system_notification"))["message"] == "reply"
        # Each got its one frame: the sender no push, the other device no reply
        # (a socket's frames arrive in order, so a stray one would come first).
        after = json.dumps(
            {"type": "system_notification", "message": "after", "level": "info", "timestamp": 1}
        ).encode()
        await publisher.publish(keys.user_channel(user), encode_push("", after))
        for client in (phone, laptop):
            assert (await client.expect("system_notification"))["message"] == "after"
        _, body = gateway.http_get("/metrics")
        assert re.search(
            rb'^chat_gateway_request_round_trip_seconds_count\{type="send_message"\} 1.0$',
            body,
            re.M,
        ), "the reply is timed as the request's round trip"
    finally:
        await phone.close()
        await laptop.close()
        await publisher.aclose()


async def test_pushes_routed_before_a_revocation_arrive_before_the_close(
    fresh_stack, redis_server
) -> None:
    """A push and the revocation of its reader's token in one read: the push still goes first."""
    gateway = fresh_stack.start("gateway")
    user = uid("revoked")
    token = token_for(user)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    client = await ChatClient.connect(gateway.ws_url, user, token=token)
    publisher = redis.Redis.from_url(redis_server.url)
    try:
        frame = json.dumps(
            {"type": "system_notification", "message": "last", "level": "info", "timestamp": 1}
        ).encode()
        script = "redis.call('PUBLISH', KEYS[1], ARGV[1]) redis.call('PUBLISH', KEYS[2], ARGV[2])"
        await publisher.eval(
            script, 2, keys.user_channel(user), keys.REVOCATIONS, encode_push("", frame), jti
        )
        assert await client.wait_closed() == 1008
        assert [f["message"] for f in client.drain("system_notification")] == ["last"]
    finally:
        await client.close()
        await publisher.aclose()


async def test_slow_reader_is_closed_1013_without_stalling_others(
    fresh_stack, redis_server
) -> None:
    gateway = fresh_stack.start("gateway", CHAT_SEND_BUFFER_MAX_BYTES="262144")
    fresh_stack.start("presence")
    slow = await asyncio.to_thread(raw_websocket, gateway.port, uid("slow"))
    fast = await ChatClient.connect(gateway.ws_url, uid("fast"))
    publisher = redis.Redis.from_url(redis_server.url)
    try:
        frame = json.dumps(
            {
                "type": "system_notification",
                "message": "x" * 30_000,
                "level": "info",
                "timestamp": 1,
            }
        )
        worst = 0.0
        for _ in range(400):  # 12 MB: far past the kernel buffers and the queue bound
            await publisher.publish("system:notifications", frame)
            started = time.monotonic()
            await fast.request({"type": "ping"}, "pong")
            worst = max(worst, time.monotonic() - started)
        assert len(fast.drain("system_notification")) >= 1
        # The slow socket was closed by the server: reading it to the end
        # finds a close frame with 1013 (or the connection reset after it).
        code = server_close_code(await asyncio.to_thread(received_until_closed, slow))
        assert code in (1013, None), code
        _, body = gateway.http_get("/metrics")
        assert b"chat_gateway_slow_reader_closes_total 1.0" in body
        assert worst < 1.0, f"a healthy client waited {worst:.3f}s behind a slow one"
    finally:
        slow.close()
        await fast.close()
        await publisher.aclose()


async def test_heartbeat_drops_a_silent_peer_and_keeps_answering_ones(fresh_stack) -> None:
    gateway = fresh_stack.start("gateway", CHAT_HEARTBEAT_SECONDS="0.4")
    fresh_stack.start("presence")
    # aiohttp's client answers pings while it reads: a live device.
    live = await ChatClient.connect(gateway.ws_url, uid("alive"))
    dead = await asyncio.to_thread(raw_websocket, gateway.port, uid("gone"))
    pinger = await asyncio.to_thread(raw_websocket, gateway.port, uid("pinger"))
    try:
        # A client's own ping is answered with its payload echoed.
        pinger.sendall(masked_frame(0x9, b"hey"))
        data = b""
        pinger.settimeout(5)
        while b"\x8a\x03hey" not in data:
            data += await asyncio.to_thread(pinger.recv, 4096)
        # The peer that never answers is pinged, then dropped without a close
        # frame; the one that answers lives on.
        received = await asyncio.to_thread(received_until_closed, dead)
        assert b"\x89\x00" in received, received[-40:]
        assert b"\x88" not in received.split(b"\x89\x00", 1)[1]
        assert (await live.request({"type": "ping"}, "pong"))["type"] == "pong"
        _, body = gateway.http_get("/metrics")
        assert b'chat_gateway_closes_total{code="1006"}' in body
    finally:
        dead.close()
        pinger.close()
        await live.close()


async def test_idle_connection_is_closed_though_it_answers_pings(fresh_stack) -> None:
    """Pongs keep a socket alive but are not requests: a silent tab is closed (1000)."""
    gateway = fresh_stack.start(
        "gateway", CHAT_HEARTBEAT_SECONDS="0.2", CHAT_IDLE_TIMEOUT_SECONDS="1.5"
    )
    fresh_stack.start("presence")
    client = await ChatClient.connect(gateway.ws_url, uid("idle"))
    try:
        assert await client.wait_closed(timeout=10) == 1000
    finally:
        await client.close()


async def test_sigterm_drains_with_1012_and_exits(fresh_stack) -> None:
    gateway = fresh_stack.start("gateway", CHAT_DRAIN_SECONDS="1")
    clients = [await ChatClient.connect(gateway.ws_url, uid("d")) for _ in range(5)]
    try:
        os.kill(gateway.pid, signal.SIGTERM)
        codes = [await c.wait_closed(timeout=10) for c in clients]
        assert codes == [1012] * 5
        assert await asyncio.to_thread(gateway.proc.wait, 15) == 0  # type: ignore[union-attr]
    finally:
        for c in clients:
            await c.close()


async def test_health_endpoints(stack) -> None:
    for service in stack.services:
        status, body = service.http_get("/health")
        assert status == 200, (service.name, body)
        health = json.loads(body)
        assert health["status"] in ("healthy", "degraded")
        assert health["redis"]["pubSubLatency"] >= 0
        assert health["redis"]["memoryUsage"]["used"] > 0
        assert service.http_get("/healthz")[0] == 200
        assert service.http_get("/readyz")[0] == 200
        status, metrics = service.http_get("/metrics")
        assert status == 200 and b"process_cpu_seconds_total" in metrics
