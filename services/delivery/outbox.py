"""Everything one batch sends out through Redis, flushed as one pipeline.

Replies to a connection go to its gateway's channel; pushes to every device
of a user go to the user's channel. Frames are encoded once by the caller,
so a message fanned out to fifty members is serialised once, not fifty
times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared import keys
from shared.protocol import error_frame
from shared.push import encode_push
from shared.redis_client import RedisClient, publish_command
from shared.settings import Settings


class Outbox:
    def __init__(self, redis_client: RedisClient, settings: Settings) -> None:
        self.redis = redis_client
        self.settings = settings
        self._publish = publish_command(settings)
        self._ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._tags: list[Any] = []

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
        for user_id in user_ids:
            self.publish(keys.user_channel(user_id), payload, tag=(tag, user_id) if tag else None)

    def publish(self, channel: str, payload: bytes, tag: Any = None) -> None:
        self._ops.append(("execute_command", (self._publish, channel, payload), {}))
        self._tags.append(tag)

    def command(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Any other Redis command to run in the same pipeline."""
        self._ops.append((name, args, kwargs))
        self._tags.append(None)

    def __len__(self) -> int:
        return len(self._ops)

    async def flush(self) -> list[tuple[Any, Any]]:
        """Run everything in one pipeline; returns (tag, result) for tagged publishes.

        A Redis error propagates: the caller's stream entries then stay
        pending and the whole batch's effects are redone (idempotently).
        """
        if not self._ops:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name, args, kwargs in self._ops:
            getattr(pipe, name)(*args, **kwargs)
        results = await pipe.execute()
        tagged = [
            (tag, result)
            for tag, result in zip(self._tags, results, strict=True)
            if tag is not None
        ]
        self._ops.clear()
        self._tags.clear()
        return tagged
