"""Consumes domain events into cluster-wide rollups.

Active users are HyperLogLogs, one per epoch minute (about 12 KiB each,
whatever the number of users), merged on demand for the 1, 5 and 60 minute
windows. Messages are counted by content type in this process: Prometheus
turns the counter into a rate, and a restart is just a counter reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter

from shared import keys
from shared.command_conn import CommandConnection
from shared.events import ConversationCreated, MessageSent, MessagesSent, decode_domain_event
from shared.logging import get_logger
from shared.redis_client import RedisClient
from shared.scripts import execute_raw
from shared.streams import Entry, decode_entries

log = get_logger(__name__)

ACTIVE_KEY_TTL_SECONDS = 2 * 3600

MESSAGES = Counter(
    "chat_messages_total", "Messages accepted cluster-wide, by content type", ["content_type"]
)
CONVERSATIONS = Counter("chat_conversations_created_total", "Conversations created cluster-wide")

# Content types are client-chosen strings: only these become label values.
KNOWN_CONTENT_TYPES = frozenset({"text", "image", "file", "audio", "video", "system", "json"})


class Rollup:
    def __init__(self, redis_client: RedisClient, conn: CommandConnection | None = None) -> None:
        self.redis = redis_client
        self.conn = conn  # standalone Redis: each batch's writes go out on this held connection

    async def handle(self, entries: Sequence[Entry], recovered: bool) -> None:
        active: dict[int, set[str]] = {}
        # Counted per batch, then added once per content type: every message
        # sent cluster-wide passes here (a delivery batch's in one event).
        sent: dict[str, int] = {}
        for _, event in decode_entries(keys.domain_event_stream(), entries, decode_domain_event):
            if isinstance(event, MessagesSent):
                senders = active.setdefault(event.at // 60_000, set())
                for message in event.messages:
                    _count(sent, message.content_type)
                    senders.add(message.sender_id)
            elif isinstance(event, MessageSent):  # from a delivery service that predates the above
                _count(sent, event.content_type)
                active.setdefault(event.at // 60_000, set()).add(event.sender_id)
            elif isinstance(event, ConversationCreated):
                CONVERSATIONS.inc()
                active.setdefault(event.at // 60_000, set()).add(event.creator_id)
        for label, count in sent.items():
            MESSAGES.labels(content_type=label).inc(count)
        if active:
            commands: list[tuple[Any, ...]] = []
            for minute, users in active.items():
                key = keys.active_users_key(minute)
                commands.append(("PFADD", key, *users))
                commands.append(("EXPIRE", key, ACTIVE_KEY_TTL_SECONDS))
            await execute_raw(self.redis, commands, (), self.conn)


def _count(sent: dict[str, int], content_type: str) -> None:
    label = content_type if content_type in KNOWN_CONTENT_TYPES else "other"
    sent[label] = sent.get(label, 0) + 1
