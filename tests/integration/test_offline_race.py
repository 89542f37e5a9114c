"""A message's push and its offline queueing are one step: a device that
connects while a message is fanned out gets it live or in the queue it drains
on connect, never only at its next connect.

A gateway subscribes a connecting user's channel before it announces the
connection, and delivery drains the queue once announced. Publishing first
and queueing in a later round trip let a connect fall in between: the push
reached nobody, and the entry landed after the drain. Here, on a real Redis,
a device connects and leaves over and over (subscribe, then read the queue,
then unsubscribe) while messages are fanned out to its user one after
another, as delivery's pipeline does them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

import redis.asyncio as redis

from shared import keys
from shared.push import decode_push
from shared.settings import Settings
from tests.support.chat import message, push_message

MESSAGES = 600


@dataclass
class Visit:
    """One connection of the device: what it got live and from the queue."""

    left: float = 0.0  # when it began to unsubscribe
    gone: float = 0.0  # when its unsubscribe was confirmed
    live: set[int] = field(default_factory=set)
    drained: set[int] = field(default_factory=set)


async def _until(pubsub: redis.client.PubSub, kind: str, visit: Visit) -> None:
    """Read the device's channel until the (un)subscribe confirmation; pushes go to ``visit``."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        assert asyncio.get_running_loop().time() < deadline, f"no {kind} confirmation"
        reply = await pubsub.get_message(timeout=1)
        if reply is None:
            continue
        if reply["type"] == kind:
            return
        if reply["type"] == "message":
            visit.live.add(json.loads(decode_push(reply["data"]).frame)["message"]["seq"])


async def test_a_connect_during_a_fan_out_gets_the_message_live_or_from_the_queue(
    redis_server,
) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    client = redis.Redis.from_url(redis_server.url)
    device = redis.Redis.from_url(redis_server.url)
    pubsub = device.pubsub()
    user, conversation = f"u-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    channel, queue = keys.user_channel(user), keys.offline_queue_key(user)
    loop = asyncio.get_running_loop()
    sent: dict[int, tuple[float, float]] = {}  # seq -> when its fan-out began and ended
    visits: list[Visit] = []
    done = asyncio.Event()

    async def sender() -> None:
        for seq in range(1, MESSAGES + 1):
            began = loop.time()
            await push_message(client, settings, [user], message(conversation, seq))
            sent[seq] = (began, loop.time())
            await asyncio.sleep(0)
        done.set()

    async def visitor() -> None:
        while not done.is_set():
            visit = Visit()
            visits.append(visit)
            await pubsub.subscribe(channel)
            await _until(pubsub, "subscribe", visit)
            for _, fields in await device.xrange(queue):  # announced: the queue is drained
                visit.drained.add(json.loads(fields[b"d"])["seq"])
            await asyncio.sleep(0.002)
            visit.left = loop.time()
            await pubsub.unsubscribe(channel)
            await _until(pubsub, "unsubscribe", visit)
            visit.gone = loop.time()
            await asyncio.sleep(0.001)

    try:
        await asyncio.gather(sender(), visitor())
    finally:
        await pubsub.aclose()
        await device.aclose()
        await client.aclose()

    # The device never acknowledges, so the queue keeps what it holds: each
    # message fanned out after a visit's predecessor was gone, and entirely
    # before the visit began to leave, is owed to that visit.
    missed = []
    for before, visit in zip([Visit(gone=-1.0), *visits], visits, strict=False):
        for seq, (began, ended) in sent.items():
            owed = began > before.gone and ended < visit.left
            if owed and seq not in visit.live and seq not in visit.drained:
                missed.append(seq)
    assert len(visits) > 20, "the device should come and go many times"
    assert not missed, f"{len(missed)} messages neither pushed nor queued for a connect"
