"""A burst of connects is one stream batch of events: the offline queues of all
its connections are read in one pipeline (``OfflineQueue.send_batches``), and
each connection gets what it would have got connecting alone."""

from __future__ import annotations

import json
import uuid

from services.delivery.offline import OfflineQueue
from services.delivery.outbox import Outbox
from shared import keys
from shared.push import decode_push
from shared.settings import Settings
from tests.support.chat import message, push_message


async def test_connects_of_one_batch_each_get_their_queue(client, redis_server) -> None:
    settings = Settings.from_env({"CHAT_REDIS_URL": redis_server.url})
    queue = OfflineQueue(client, settings)
    ann, bob, cat = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("ann", "bob", "cat"))
    for conversation, seqs, users in (("c1", (1, 2, 3), [ann]), ("c2", (1, 2), [cat])):
        for seq in seqs:  # nobody is connected: the fan-out queues each
            assert await push_message(client, settings, users, message(conversation, seq)) == [
                (users[0], 0)
            ]
    await client.sadd(keys.offline_overflow_key(ann), "c0")  # entries ann lost to the cap
    outbox = Outbox(client, settings)
    devices = [
        (ann, "g1", "ann-phone"),
        (ann, "g2", "ann-laptop"),
        (bob, "g1", "bob"),
        (cat, "g1", "cat"),
    ]
    assert await queue.send_batches(outbox, devices) == [3, 3, 0, 2]

    frames: dict[str, list[dict]] = {}
    for command in outbox.commands:
        verb, channel, payload = command
        assert verb == "PUBLISH"
        push = decode_push(payload)
        assert channel == keys.gateway_channel("g2" if push.connection_id == "ann-laptop" else "g1")
        frames.setdefault(push.connection_id, []).append(json.loads(push.frame))
    # The overflow is told once, to the first device, ahead of the queue.
    assert [f["type"] for f in frames["ann-phone"]] == ["sync_required", "queued_messages"]
    assert frames["ann-phone"][0]["conversationIds"] == ["c0"]
    assert [f["type"] for f in frames["ann-laptop"]] == ["queued_messages"]
    assert "bob" not in frames
    for device, seqs in (("ann-phone", [1, 2, 3]), ("ann-laptop", [1, 2, 3]), ("cat", [1, 2])):
        batch = frames[device][-1]
        assert [m["seq"] for m in batch["messages"]] == seqs
        assert batch["more"] is False
    assert not await client.exists(keys.offline_overflow_key(ann))
    # Nothing is removed until a device acks: the queue is still whole.
    assert await client.xlen(keys.offline_queue_key(ann)) == 3
