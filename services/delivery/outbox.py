"""Everything one batch sends out through Redis, flushed as one pipeline.

Replies to a connection go to its gateway's channel, but for ``message_ack``,
which rides on the push to the sender's own channel; pushes to every device
of a user go to the user's channel. Frames are encoded once by the caller,
so a message fanned out to fifty members is serialised once, not fifty
times. On standalone Redis the publishes of one push to many members are one
script call (``fanout.lua``: a PUBLISH per member inside Redis), so the
pipeline carries one command per message instead of one per member; a
cluster shards channels, so there each member is its own SPUBLISH.

A message's push also keeps the message in the offline queue of each member
no gateway received it for, inside the same script (``fanout_keep.lua``):
one call for all members on standalone Redis, one per member on a cluster
(a member's queue and channel share a slot there).

Commands are kept as their words on the wire and, on standalone Redis, sent
as they are on the held connection (``send_raw``): a message costs some
eight commands here, and redis-py's command methods, pipeline and reply
callbacks were a tenth of the delivery service's CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from shared import keys
from shared.command_conn import CommandConnection
from shared.protocol import error_frame
from shared.push import encode_push
from shared.redis_client import RedisClient, publish_command
from shared.scripts import load_script, load_script_with, send_raw, settle_raw
from shared.settings import Settings
from shared.streams import xadd_words


class _Kept:
    """The members of one ``fanout_keep`` call, in the order of its replies."""

    __slots__ = ("user_ids",)

    def __init__(self, user_ids: Sequence[str]) -> None:
        self.user_ids = user_ids


class Outbox:
    def __init__(
        self, redis_client: RedisClient, settings: Settings, conn: CommandConnection | None = None
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.conn = conn  # standalone Redis: the pipeline goes out on this held connection
        self._publish = publish_command(settings)
        self._cluster = isinstance(redis_client, RedisCluster)
        self._fanout = None if self._cluster else load_script(redis_client, "fanout")
        self._keep = load_script_with(
            redis_client,
            "fanout_keep",
            "keep",
            "offline_keep",
            "queue, overflow, cap, retention, conversation, message, now",
        )
        self._keep_limits = (
            settings.offline_queue_max,
            settings.offline_queue_retention_seconds * 1000,
        )
        self._scripts: list[AsyncScript] = [self._keep, *([self._fanout] if self._fanout else [])]
        self._commands: list[tuple[Any, ...]] = []
        self._tags: list[_Kept | None] = []
        self._on_reply: list[tuple[int, Callable[[Any], None]]] = []

    def reply(
        self,
        gateway_id: str,
        connection_id: str,
        frame: bytes,
        accepted_at: float | None = None,
        request_type: str = "",
    ) -> None:
        """Send ``frame`` to one connection on one gateway."""
        self.publish(
            keys.gateway_channel(gateway_id),
            encode_push(connection_id, frame, accepted_at, request_type),
        )

    def error(
        self, gateway_id: str, connection_id: str, code: str, message: str, request_id: str | None
    ) -> None:
        self.reply(gateway_id, connection_id, error_frame(code, message, request_id))

    def push_users(
        self,
        user_ids: Sequence[str],
        frame: bytes,
        skip_connection: str = "",
        accepted_at: float | None = None,
    ) -> None:
        """Send ``frame`` to every device of each user (but ``skip_connection``)."""
        payload = encode_push(skip_connection, frame, accepted_at)
        if self._fanout is not None and len(user_ids) > 1:
            channels = [keys.user_channel(user_id) for user_id in user_ids]
            self.command("EVALSHA", self._fanout.sha, 0, payload, *channels)
            return
        for user_id in user_ids:
            self.publish(keys.user_channel(user_id), payload)

    def push_message(
        self,
        user_ids: Sequence[str],
        frame: bytes,
        conversation_id: str,
        queued: bytes,
        skip_connection: str = "",
        accepted_at: float | None = None,
        reply: tuple[str, bytes, str] | None = None,
    ) -> None:
        """``push_users``, and each member no gateway received it for keeps
        ``queued`` (the message) in their offline queue; ``flush`` returns who.

        ``reply`` (the sender's user id, a frame, its request type; the sender
        one of ``user_ids``): ``skip_connection`` gets that frame instead of
        nothing, on the push to the sender's own channel (see shared.push), so
        it costs no publish of its own.
        """
        cap, retention = self._keep_limits
        push = encode_push(skip_connection, frame, accepted_at)
        own = b""
        if reply is not None:
            sender, reply_frame, request_type = reply
            if sender not in user_ids:
                raise ValueError("a reply rides on the push to its sender, who is not a member")
            own = encode_push(skip_connection, frame, accepted_at, request_type, reply_frame)
            # The sender first: the script gives the first channel its own push.
            user_ids = [sender, *(u for u in user_ids if u != sender)]
        head = (
            self._publish,
            push,
            cap,
            retention,
            conversation_id,
            queued,
            int(time.time() * 1000),
        )
        # One call for every member; a cluster's per member, on that member's slot.
        groups = [[u] for u in user_ids] if self._cluster else [user_ids]
        for index, group in enumerate(groups):
            queues: list[str] = []
            for user_id in group:
                queues += (keys.offline_queue_key(user_id), keys.offline_overflow_key(user_id))
            channels = [keys.user_channel(user_id) for user_id in group]
            first = own if index == 0 else b""
            call = ("EVALSHA", self._keep.sha, len(queues), *queues, *head, first, *channels)
            self._commands.append(call)
            self._tags.append(_Kept(group))

    def publish(self, channel: str, payload: bytes) -> None:
        self.command(self._publish, channel, payload)

    def command(self, *words: Any) -> None:
        """Any other Redis command, as its words (``"EXPIRE", key, 60``), in the same pipeline."""
        self._commands.append(words)
        self._tags.append(None)

    def script(
        self,
        script: AsyncScript,
        keys_: Sequence[str],
        args: Sequence[Any],
        on_reply: Callable[[Any], None],
    ) -> None:
        """A script call in the same pipeline; ``on_reply`` gets its reply (or the error in
        its place) when the pipeline settles, before any error is raised."""
        if script not in self._scripts:
            self._scripts.append(script)  # loaded again if Redis lost it
        self._on_reply.append((len(self._commands), on_reply))
        self.command("EVALSHA", script.sha, len(keys_), *keys_, *args)

    def domain_event(self, body: bytes, messages: int = 1) -> None:
        """Append an encoded domain event of ``messages`` messages to its stream.

        The cap counts messages, as when every event was one: an event of a
        batch's n messages is appended with a cap of ``1/n`` of it in entries,
        so the stream holds about the cap's worth of messages (and of memory)
        whatever the batches' sizes, not up to a whole batch per capped entry.
        """
        maxlen = max(self.settings.event_stream_maxlen // max(messages, 1), 1)
        self.command(*xadd_words(keys.domain_event_stream(), body, maxlen))

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def commands(self) -> list[tuple[Any, ...]]:
        """Everything queued, as words: for a caller that sends them in its own write."""
        return self._commands

    async def flush(self) -> list[tuple[str, int]]:
        """Run everything in one pipeline; returns (user id, entries pushed out of
        their queue) for each member a ``push_message`` queued its message for.

        A Redis error propagates: the caller's stream entries then stay
        pending and the whole batch's effects are redone (idempotently).
        """
        if not self._commands:
            return []
        return await self.settle(await send_raw(self.redis, self._commands, self.conn))

    async def settle(self, replies: list[Any]) -> list[tuple[str, int]]:
        """What ``flush`` returns, from the replies of ``commands`` sent elsewhere.

        A fan-out script Redis no longer knew is loaded and its calls run
        again here; any other error reply is raised.
        """
        results = await settle_raw(
            self.redis, self._commands, replies, self._scripts, self.conn, raise_first=False
        )
        for index, on_reply in self._on_reply:
            on_reply(results[index])  # an error reply too: the caller may undo what it assumed
        for result in results:
            if isinstance(result, Exception):
                raise result
        kept: list[tuple[str, int]] = []
        for tag, result in zip(self._tags, results, strict=True):
            if tag is not None:
                # fanout_keep.lua: receivers (> 0), or queued with that many pushed out.
                kept.extend(
                    (user_id, -reply)
                    for user_id, reply in zip(tag.user_ids, result, strict=True)
                    if reply <= 0
                )
        self._commands = []
        self._tags = []
        self._on_reply = []
        return kept
