"""Everything one batch sends out through Redis, flushed as one pipeline.

Replies to a connection go to its gateway's channel; pushes to every device
of a user go to the user's channel. Frames are encoded once by the caller,
so a message fanned out to fifty members is serialised once, not fifty
times. On standalone Redis the publishes of one push to many members are one
script call (``fanout.lua``: a PUBLISH per member inside Redis), so the
pipeline carries one command per message instead of one per member; a
cluster shards channels, so there each member is its own SPUBLISH.

Commands are kept as their words on the wire and, on standalone Redis, sent
as they are on the held connection (``send_raw``): a message costs some
eight commands here, and redis-py's command methods, pipeline and reply
callbacks were a tenth of the delivery service's CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from shared import keys
from shared.command_conn import CommandConnection
from shared.protocol import error_frame
from shared.push import encode_push
from shared.redis_client import RedisClient, publish_command
from shared.scripts import load_script, send_raw, settle_raw
from shared.settings import Settings
from shared.streams import xadd_words


class _Many:
    """Tags of the channels of one fan-out script call, in order."""

    __slots__ = ("tags",)

    def __init__(self, tags: list[Any]) -> None:
        self.tags = tags


class Outbox:
    def __init__(
        self, redis_client: RedisClient, settings: Settings, conn: CommandConnection | None = None
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.conn = conn  # standalone Redis: the pipeline goes out on this held connection
        self._publish = publish_command(settings)
        self._fanout = (
            None if isinstance(redis_client, RedisCluster) else load_script(redis_client, "fanout")
        )
        self._scripts: list[AsyncScript] = [self._fanout] if self._fanout else []
        self._commands: list[tuple[Any, ...]] = []
        self._tags: list[Any] = []
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
        tag: Any = None,
    ) -> None:
        """Send ``frame`` to every device of each user (but ``skip_connection``)."""
        payload = encode_push(skip_connection, frame, accepted_at)
        if self._fanout is not None and len(user_ids) > 1:
            channels = [keys.user_channel(user_id) for user_id in user_ids]
            self._commands.append(("EVALSHA", self._fanout.sha, 0, payload, *channels))
            self._tags.append(_Many([(tag, user_id) if tag else None for user_id in user_ids]))
            return
        for user_id in user_ids:
            self.publish(keys.user_channel(user_id), payload, tag=(tag, user_id) if tag else None)

    def publish(self, channel: str, payload: bytes, tag: Any = None) -> None:
        self._commands.append((self._publish, channel, payload))
        self._tags.append(tag)

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

    def domain_event(self, body: bytes) -> None:
        """Append an encoded domain event to its stream (capped, approximately)."""
        self.command(
            *xadd_words(keys.domain_event_stream(), body, self.settings.event_stream_maxlen)
        )

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def commands(self) -> list[tuple[Any, ...]]:
        """Everything queued, as words: for a caller that sends them in its own write."""
        return self._commands

    async def flush(self) -> list[tuple[Any, Any]]:
        """Run everything in one pipeline; returns (tag, result) for tagged publishes.

        A Redis error propagates: the caller's stream entries then stay
        pending and the whole batch's effects are redone (idempotently).
        """
        if not self._commands:
            return []
        return await self.settle(await send_raw(self.redis, self._commands, self.conn))

    async def settle(self, replies: list[Any]) -> list[tuple[Any, Any]]:
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
        tagged: list[tuple[Any, Any]] = []
        for tag, result in zip(self._tags, results, strict=True):
            if isinstance(tag, _Many):
                tagged.extend(
                    (one, count) for one, count in zip(tag.tags, result, strict=True) if one
                )
            elif tag is not None:
                tagged.append((tag, result))
        self._commands = []
        self._tags = []
        self._on_reply = []
        return tagged
