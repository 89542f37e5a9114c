"""The gateway's pub/sub connection against a real redis-server: confirmed
subscriptions, AUTH, and restoring itself after Redis is killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as redis

from shared.pubsub import StandaloneSubscriber
from shared.pubsub_conn import encode_command
from tests.support.chat import uid, until
from tests.support.servers import RedisServer


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self.reconnects = 0

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.messages.append((channel, data))

    def on_reconnect(self) -> None:
        self.reconnects += 1


def test_encode_command_is_resp() -> None:
    assert (
        encode_command(b"SUBSCRIBE", "a", b"bc")
        == b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"
    )


async def _subscriber(url: str, inbox: Inbox) -> StandaloneSubscriber:
    subscriber = StandaloneSubscriber(redis.Redis.from_url(url))
    await subscriber.start(inbox.on_message, inbox.on_reconnect)
    return subscriber


async def test_subscribe_confirmed_then_every_publish_arrives_in_order(redis_server) -> None:
    inbox = Inbox()
    subscriber = await _subscriber(redis_server.url, inbox)
    publisher = redis.Redis.from_url(redis_server.url)
    channel = uid("user:")
    try:
        await subscriber.subscribe(channel)
        # Subscribed means subscribed: the very next publish reaches us.
        assert await publisher.publish(channel, b"first") == 1
        pipe = publisher.pipeline(transaction=False)
        for i in range(500):
            pipe.publish(channel, b"%d" % i)
        await pipe.execute()
        await until(lambda: len(inbox.messages) == 501, 5)
        assert [data for _, data in inbox.messages] == [b"first"] + [b"%d" % i for i in range(500)]
        assert {ch for ch, _ in inbox.messages} == {channel.encode()}
        await subscriber.unsubscribe(channel)
        await _until_receivers(publisher, channel, 0)
    finally:
        await subscriber.stop()
        await publisher.aclose()


class _CountingTransport:
    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()


async def test_subscribes_of_one_pass_go_out_in_one_write(redis_server) -> None:
    """Thirty connections subscribing their users in the same pass of the loop (a
    reconnect burst): one write to Redis, and every subscription confirmed."""
    inbox = Inbox()
    subscriber = await _subscriber(redis_server.url, inbox)
    publisher = redis.Redis.from_url(redis_server.url)
    reader = subscriber._conn._reader  # type: ignore[union-attr]
    assert reader is not None and reader.transport is not None
    counting = _CountingTransport(reader.transport)
    reader.transport = counting  # type: ignore[assignment]
    channels = [uid("user:") for _ in range(30)]
    try:
        await asyncio.gather(*(subscriber.subscribe(channel) for channel in channels))
        assert counting.writes == 1
        for channel in channels:
            assert await publisher.publish(channel, b"x") == 1
    finally:
        await subscriber.stop()
        await publisher.aclose()


async def _until_receivers(client: redis.Redis, channel: str, count: int) -> None:
    for _ in range(100):
        result = await client.pubsub_numsub(channel)
        if result[0][1] == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{channel} still has {result[0][1]} subscribers")


async def test_password_protected_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth", password="s3cret")
    server.start()
    inbox = Inbox()
    subscriber = await _subscriber(server.url, inbox)
    publisher = redis.Redis.from_url(server.url)
    try:
        await subscriber.subscribe("system:notifications")
        assert await publisher.publish("system:notifications", b"hello") == 1
        await until(lambda: inbox.messages == [(b"system:notifications", b"hello")], 5)
    finally:
        await subscriber.stop()
        await publisher.aclose()
        server.kill9()


async def test_kill9_redis_restores_subscriptions_and_reports_it(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "restart")
    server.start()
    inbox = Inbox()
    subscriber = await _subscriber(server.url, inbox)
    channels = [uid("user:") for _ in range(50)]
    try:
        for channel in channels:
            await subscriber.subscribe(channel)
        server.kill9()
        # While Redis is down a new subscription is refused, not left hanging.
        await until(lambda: not subscriber._conn or not subscriber._conn.connected, 5)
        with pytest.raises(ConnectionError):
            await subscriber.subscribe(uid("user:"))
        server.start()
        await until(lambda: inbox.reconnects == 1, 10)
        publisher = redis.Redis.from_url(server.url)
        try:
            for channel in channels:
                assert await publisher.publish(channel, b"after") == 1
        finally:
            await publisher.aclose()
        await until(lambda: len(inbox.messages) == len(channels), 5)
    finally:
        await subscriber.stop()
        server.kill9()
