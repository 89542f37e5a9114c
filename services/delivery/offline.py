"""Offline queues: messages kept per user while no device of theirs is connected.

A message goes to a member's queue when publishing it on their channel
reached no gateway (no live connection): the fan-out script does both
(``fanout_keep.lua``, see outbox.py), so no connect falls between them. A
device that connects receives the queue as ``queued_messages`` batches of at
most 100, oldest first; entries are removed only when a device sends
``ack_queued`` with the batch's cursor, so a device that goes away before
acking gets them again next time. Entries pushed out by the cap or by
retention leave their conversation ids in an overflow set, turned into
``sync_required`` on the next connect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from services.delivery import metrics
from services.delivery.outbox import Outbox
from shared import keys
from shared.command_conn import CommandConnection
from shared.protocol import Message, QueuedMessages, SyncRequired, encode
from shared.redis_client import RedisClient, text
from shared.scripts import execute_raw, load_script, run_many
from shared.settings import Settings
from shared.streams import entry_fields

_message_decoder = msgspec.json.Decoder(Message)
queued_form = msgspec.json.Encoder().encode  # a message as its queue entry keeps it


def next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (for an exclusive MINID trim)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def valid_cursor(cursor: str) -> bool:
    ms, sep, seq = cursor.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit() and len(cursor) <= 41


class OfflineQueue:
    def __init__(self, redis_client: RedisClient, settings: Settings) -> None:
        self.redis = redis_client
        self.retention_ms = settings.offline_queue_retention_seconds * 1000
        self.batch = settings.queue_batch_size
        self._ack = load_script(redis_client, "queue_ack")

    async def count_kept(
        self, kept: list[tuple[str, int]], conn: CommandConnection | None = None
    ) -> None:
        """Count the messages a fan-out queued (``Outbox.push_message``: each
        (user, entries the cap or retention pushed out of their queue))."""
        if not kept:
            return
        metrics.OFFLINE_ENQUEUED.inc(len(kept))
        overflow = sum(dropped for _, dropped in kept)
        if overflow:
            metrics.OFFLINE_OVERFLOWS.inc(overflow)
        # A cluster-wide depth counter for the metrics service: a scrape must
        # not sum queue lengths over users. It is in another slot than the
        # queues, so it is kept beside the scripts, not inside them.
        depth = ("INCRBY", keys.offline_depth_key(), len(kept) - overflow)
        await execute_raw(self.redis, [depth], (), conn)

    async def send_batch(
        self, outbox: Outbox, user_id: str, gateway_id: str, connection_id: str, after: str = "-"
    ) -> int:
        """Queue for one connection the next batch after ``after``; returns its size.

        On the first batch (``after == "-"``) any overflow is announced first as
        ``sync_required``, and cleared: the device is about to sync.
        """
        return (await self.send_batches(outbox, [(user_id, gateway_id, connection_id)], after))[0]

    async def send_batches(
        self, outbox: Outbox, devices: Sequence[tuple[str, str, str]], after: str = "-"
    ) -> list[int]:
        """``send_batch`` for many (user, gateway, connection) at once: one round trip.

        A burst of connects (a gateway restarted and its clients came back)
        is one stream batch of events, read in one pipeline instead of one
        round trip each. Two devices of one user in a batch both get the
        queue; only the first gets the overflow's ``sync_required``, as when
        they connect one after the other.
        """
        if not devices:
            return []
        first = after == "-"
        start = "-" if first else f"({after}"
        commands: list[tuple[Any, ...]] = []
        for user_id, _, _ in devices:
            queue = keys.offline_queue_key(user_id)
            commands.append(("XRANGE", queue, start, "+", "COUNT", self.batch + 1))
            if first:
                overflow_key = keys.offline_overflow_key(user_id)
                commands.append(("SMEMBERS", overflow_key))
                commands.append(("DEL", overflow_key))
        # As words on the outbox's held connection (standalone Redis): a burst
        # of connects reads hundreds of queues, and redis-py's pipeline pays a
        # timeout scope per reply.
        replies = iter(await execute_raw(self.redis, commands, (), outbox.conn))
        sizes = []
        for _, gateway_id, connection_id in devices:
            entries = next(replies)
            if first:
                overflow = next(replies)
                next(replies)  # the DEL
                if overflow:
                    conversations = sorted(c.decode() for c in overflow)
                    outbox.reply(
                        gateway_id,
                        connection_id,
                        encode(SyncRequired(conversation_ids=conversations)),
                    )
            sizes.append(self._queued(outbox, gateway_id, connection_id, entries))
        return sizes

    def _queued(
        self, outbox: Outbox, gateway_id: str, connection_id: str, entries: list[Any]
    ) -> int:
        """One ``queued_messages`` frame of ``entries`` (XRANGE's, one beyond the batch)."""
        if not entries:
            return 0
        more = len(entries) > self.batch
        entries = entries[: self.batch]
        messages = [_message_decoder.decode(entry_fields(fields)[b"d"]) for _, fields in entries]
        cursor = entries[-1][0].decode()
        frame = QueuedMessages(messages=messages, cursor=cursor, more=more)
        outbox.reply(gateway_id, connection_id, encode(frame))
        return len(messages)

    async def ack(
        self, user_id: str, up_to: str, conn: CommandConnection | None = None
    ) -> tuple[str, bool]:
        """Remove every entry up to and including ``up_to``.

        Returns where the device should continue and whether it fell behind:
        another device of the user acknowledged past ``up_to`` already, so
        entries this device never received are gone from the queue.
        """
        ((raw_floor, removed),) = await run_many(
            self.redis,
            self._ack,
            [
                (
                    [keys.offline_queue_key(user_id), keys.offline_ack_floor_key(user_id)],
                    [up_to, next_id(up_to), self.retention_ms],
                )
            ],
            conn,
        )
        if int(removed):
            depth = ("DECRBY", keys.offline_depth_key(), int(removed))
            await execute_raw(self.redis, [depth], (), conn)
        floor = text(raw_floor)
        return floor, floor != up_to
