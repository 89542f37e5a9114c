"""A conversation's head: its last seq and when it moved, kept in Redis.

The messages collection is the truth (its unique (conversationId, seq)
index); the head is what readers need without looking there:
`list_conversations` (lastSeq, unreadCount, newest first), the owner's
counter when it first numbers a conversation's messages, and the newest seq
`fetch_history` checks the recent cache against.

It lives in Redis, not in the conversation's document, because moving a
document on every batch costs a second write before the ack, and on
FerretDB's SQLite backend an update by `_id` scans the whole collection: it
was about three quarters of the CPU of a stored message. The owner moves the
head in the batch's own fan-out pipeline, after the insert and before the
pushes (`seq_advance.lua`, up only), so on standalone Redis, where the
pipeline runs in order on one connection, a member who got a push and then
lists the conversation sees at least its seq (on a cluster the head and the
push are on different nodes, and the list may lag the push by that pipeline).

A head Redis no longer has (expired after `HEAD_TTL_MS` of silence, or Redis
lost its data) is rebuilt from the newest stored message and written back,
up only, so a rebuild racing with the owner cannot move it back. A head is
only ever ahead of the store if the store lost messages it had acknowledged.
On MongoDB that rebuild is a lookup in the (conversationId, seq) index; on
FerretDB's SQLite backend it reads and sorts the whole messages collection
(about 2.4 s at 50,000 messages), which is why the head is kept for a week.

With persistence off there is no store: the head is the seq counter itself,
it never expires, and a missing one is 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from services.delivery.cache import CachedConversation
from services.delivery.outbox import Outbox
from services.delivery.store import Store
from shared import keys
from shared.command_conn import CommandConnection
from shared.protocol import Conversation
from shared.redis_client import RedisClient
from shared.scripts import execute_raw, load_script
from shared.settings import Settings

HEAD_TTL_MS = 7 * 24 * 3600 * 1000


class Head(NamedTuple):
    seq: int
    at: int  # epoch ms of the last move (the creation time for none)


def _ignore(_reply: Any) -> None:
    """A head move whose reply nobody needs: a failed one fails its pipeline,
    which redoes the batch."""


class Heads:
    def __init__(
        self,
        redis_client: RedisClient,
        store: Store,
        settings: Settings,
        conn: CommandConnection | None = None,
    ) -> None:
        self.redis = redis_client
        self.store = store
        self.conn = conn
        self.persistence = settings.persistence
        self.ttl_ms = HEAD_TTL_MS if settings.persistence else 0
        self.script = load_script(redis_client, "seq_advance")

    async def read(self, conversations: Sequence[Conversation]) -> dict[str, Head]:
        """Each conversation's head; one Redis lost is rebuilt from the store."""
        if not conversations:
            return {}
        replies = await execute_raw(
            self.redis,
            [("HMGET", keys.conversation_head_key(c.id), "seq", "at") for c in conversations],
            conn=self.conn,
        )
        heads: dict[str, Head] = {}
        lost: list[Conversation] = []
        for conversation, (seq, at) in zip(conversations, replies, strict=True):
            if seq is not None:
                heads[conversation.id] = Head(int(seq), int(at or conversation.created_at))
            elif self.persistence:
                lost.append(conversation)
            else:
                heads[conversation.id] = Head(0, conversation.created_at)
        if lost:
            found = await asyncio.gather(*(self.store.newest(c.id) for c in lost))
            for conversation, newest in zip(lost, found, strict=True):
                heads[conversation.id] = Head(*(newest or (0, conversation.created_at)))
            await execute_raw(
                self.redis,
                [self._words(c.id, heads[c.id]) for c in lost],
                [self.script],
                conn=self.conn,
            )
        return heads

    async def count(self, entries: Iterable[CachedConversation]) -> None:
        """Set the counter of cached conversations the owner has not numbered
        from since it took their partition (see ``CachedConversation.counted``)."""
        unread = {e.conversation.id: e for e in entries if not e.counted}
        if not unread:
            return
        heads = await self.read([e.conversation for e in unread.values()])
        for cid, entry in unread.items():
            entry.last_seq = heads[cid].seq
            entry.counted = True

    def advance(
        self,
        outbox: Outbox,
        conversation_id: str,
        seq: int,
        at: int,
        on_reply: Callable[[Any], None] = _ignore,
    ) -> None:
        """Move the head up to ``seq`` in ``outbox``'s pipeline; ``on_reply`` gets the
        seq it held before."""
        outbox.script(self.script, *self._call(conversation_id, Head(seq, at)), on_reply)

    def _words(self, conversation_id: str, head: Head) -> tuple[Any, ...]:
        """The same move as words, for a pipeline of its own (a rebuilt head)."""
        keys_, args = self._call(conversation_id, head)
        return ("EVALSHA", self.script.sha, len(keys_), *keys_, *args)

    def _call(self, conversation_id: str, head: Head) -> tuple[list[str], list[int]]:
        """``seq_advance.lua``'s KEYS and ARGV for moving a head up to ``head``."""
        return [keys.conversation_head_key(conversation_id)], [head.seq, head.at, self.ttl_ms]
