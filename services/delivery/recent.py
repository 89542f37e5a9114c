"""The newest messages of each conversation, kept in Redis for history reads.

FerretDB scans a collection for every query that is not by ``_id``, so the
common "open a conversation" read (the last page) is served from here. The
sorted set is keyed by seq, so a redone write is idempotent; a read is used
only when it is provably complete (consecutive seqs up to the conversation's
last seq), otherwise MongoDB answers.
"""

from __future__ import annotations

from typing import cast

import msgspec

from services.delivery.outbox import Outbox
from shared import keys
from shared.command_conn import CommandConnection
from shared.protocol import Message
from shared.redis_client import RedisClient
from shared.scripts import execute_raw

RECENT_TTL_SECONDS = 24 * 3600

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


class RecentCache:
    def __init__(self, redis_client: RedisClient, size: int) -> None:
        self.redis = redis_client
        self.size = size

    def add(self, outbox: Outbox, messages: list[Message]) -> None:
        """Cache a batch's messages: per conversation one ZADD, one trim, one TTL refresh."""
        by_key: dict[str, list[bytes | int]] = {}
        for message in messages:
            pairs = by_key.setdefault(keys.recent_messages_key(message.conversation_id), [])
            pairs += (message.seq, _encoder.encode(message))
        for key, pairs in by_key.items():
            outbox.command("ZADD", key, *pairs)
            outbox.command("ZREMRANGEBYRANK", key, 0, -(self.size + 1))
            outbox.command("EXPIRE", key, RECENT_TTL_SECONDS)

    async def page(
        self,
        conversation_id: str,
        before_seq: int | None,
        limit: int,
        last_seq: int,
        conn: CommandConnection | None = None,
    ) -> tuple[list[Message], bool] | None:
        """The page before ``before_seq`` if the cache provably holds all of it, else None.

        ``last_seq`` is the newest seq the caller knows of; the cache may know a
        newer one (it is written before the counter is shared), never an older one.
        Read on ``conn`` (a held connection) on standalone Redis.
        """
        key = keys.recent_messages_key(conversation_id)
        if before_seq is None:
            want = None
            command: tuple[object, ...] = ("ZRANGE", key, -limit, -1)
        else:
            top = before_seq - 1
            if top <= 0:
                return [], False
            want = top - max(top - limit + 1, 1) + 1
            command = ("ZRANGEBYSCORE", key, max(top - limit + 1, 1), top)
        (raw,) = await execute_raw(self.redis, [command], (), conn)
        if want is not None and len(raw) != want:
            return None
        messages = [_decoder.decode(cast(bytes, r)) for r in raw]
        if not messages:
            return ([], False) if last_seq == 0 and before_seq is None else None
        bottom = messages[0].seq
        if any(m.seq != bottom + i for i, m in enumerate(messages)):
            return None
        if before_seq is None and messages[-1].seq < last_seq:
            return None
        if len(messages) < limit and bottom > 1:
            return None
        return messages, bottom > 1
