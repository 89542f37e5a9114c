"""A script call in a batch's fan-out pipeline, on a real Redis: its reply reaches
its callback when the pipeline settles (an error reply too, before it is raised),
and a script Redis lost is loaded again. ``seq_advance`` is the one in use: a
conversation's head (its seq counter with persistence off), moved up and never down.
The domain-event stream's cap, applied by the outbox, counts messages."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError

from services.delivery.outbox import Outbox
from shared import keys
from shared.command_conn import held_connection
from shared.push import decode_push
from shared.scripts import load_script
from shared.settings import Settings
from tests.support.servers import own_database


async def advance(client: Any, settings: Settings, tops: dict[str, int], held: bool) -> dict:
    """One pipeline: a publish, then ``seq_advance`` for each counter; the replies by key."""
    conn = held_connection(client) if held else None
    outbox = Outbox(client, settings, conn)
    script = load_script(client, "seq_advance")
    replies: dict[str, Any] = {}
    outbox.publish(keys.user_channel("nobody"), b"x")
    for key, top in tops.items():
        outbox.script(
            script, [key], [top, 1000, 0], lambda reply, key=key: replies.__setitem__(key, reply)
        )
    try:
        await outbox.flush()
    finally:
        if conn is not None:
            conn.close()
    return replies


@pytest.mark.parametrize("held", [False, True], ids=["pool", "held"])
async def test_counter_moves_up_never_down_and_tells_what_it_held(
    client, redis_server, held: bool
) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    a, b = (keys.conversation_head_key(f"c-{uuid.uuid4().hex}") for _ in range(2))
    assert await advance(client, settings, {a: 3, b: 1}, held) == {a: 0, b: 0}
    assert await advance(client, settings, {a: 5}, held) == {a: 3}
    assert await advance(client, settings, {a: 4}, held) == {a: 5}  # another owner was ahead
    assert [await client.hget(k, "seq") for k in (a, b)] == [b"5", b"1"]
    assert await client.ttl(a) == -1  # no TTL asked: the head is the truth


@pytest.mark.parametrize("held", [False, True], ids=["pool", "held"])
async def test_lost_script_is_loaded_again(client, redis_server, held: bool) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    key = keys.conversation_head_key(f"c-{uuid.uuid4().hex}")
    await advance(client, settings, {key: 1}, held)
    await client.script_flush()
    assert await advance(client, settings, {key: 2}, held) == {key: 1}
    assert await client.hget(key, "seq") == b"2"


@pytest.mark.parametrize("held", [False, True], ids=["pool", "held"])
async def test_error_reply_reaches_its_callback_then_is_raised(
    client, redis_server, held: bool
) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    key = keys.conversation_head_key(f"c-{uuid.uuid4().hex}")
    await client.set(key, "not a number")
    seen: list[Any] = []
    conn = held_connection(client) if held else None
    outbox = Outbox(client, settings, conn)
    outbox.script(load_script(client, "seq_advance"), [key], [1, 1000, 0], seen.append)
    try:
        with pytest.raises(ResponseError):
            await outbox.flush()
    finally:
        if conn is not None:
            conn.close()
    assert len(seen) == 1 and isinstance(seen[0], ResponseError)
    assert await client.get(key) == b"not a number"


@pytest.mark.parametrize("held", [False, True], ids=["pool", "held"])
async def test_fan_out_publishes_or_queues_and_survives_a_lost_script(
    client, redis_server, held: bool
) -> None:
    """``push_message``: one ``fanout_keep`` call, the sender's channel first and its
    push carrying the reply; a call whose script Redis lost is sent again once the
    script is loaded."""
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    online, sender, offline = (f"u-{uuid.uuid4().hex}" for _ in range(3))
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.user_channel(online), keys.user_channel(sender))
    conn = held_connection(client) if held else None
    frame, ack = b'{"type":"message"}', b'{"type":"message_ack"}'
    try:
        for attempt in range(2):
            if attempt:
                await client.script_flush()
            outbox = Outbox(client, settings, conn)
            outbox.push_message(
                [online, offline, sender],
                frame,
                "c-1",
                b"as queued",
                skip_connection="conn-1",
                reply=(sender, ack, "send_message"),
            )
            (command,) = outbox.commands
            channels = tuple(keys.user_channel(u) for u in (sender, online, offline))
            assert command[-3:] == channels and command[2] == 6, command
            assert await outbox.flush() == [(offline, 0)]
            pushes = {}
            deadline = time.monotonic() + 5
            while len(pushes) < 2:
                assert time.monotonic() < deadline, f"both live members get the push: {pushes}"
                # None also for a subscribe confirmation it skipped.
                got = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if got is not None:
                    pushes[got["channel"].decode()] = decode_push(got["data"])
            assert pushes[keys.user_channel(sender)] == (
                "conn-1", None, "send_message", frame, ack
            )  # fmt: skip
            assert pushes[keys.user_channel(online)] == ("conn-1", None, "", frame, b"")
        assert await client.xlen(keys.offline_queue_key(offline)) == 2
    finally:
        await pubsub.aclose()
        if conn is not None:
            conn.close()


async def test_the_domain_event_cap_counts_messages_not_entries(redis_server) -> None:
    """An event of a batch's n messages is appended with 1/n of the cap: the stream
    holds about the cap's worth of messages, not up to a batch per capped entry."""
    url = own_database(redis_server.url)
    client = redis.Redis.from_url(url)
    settings = Settings.from_env({"CHAT_REDIS_URL": url, "CHAT_EVENT_STREAM_MAXLEN": "1000"})
    stream = keys.domain_event_stream()
    try:
        for messages, most in ((1, 300), (50, 1000 // 50 + 100)):
            await client.delete(stream)
            outbox = Outbox(client, settings)
            for _ in range(300):
                outbox.domain_event(b"event", messages)
            await outbox.flush()
            # MAXLEN ~ trims whole nodes of the stream (100 entries each): within one node.
            assert await client.xlen(stream) <= most, messages
    finally:
        await client.flushdb()
        await client.aclose()
