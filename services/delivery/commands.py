"""Routes a batch of commands read from one partition to their flows.

Sends are handled together (one batched insert); every other request on its
own. A MongoDB outage answers the affected requests SERVICE_UNAVAILABLE
(nothing is acked without persistence, and the client may retry with the
same clientMessageId); a Redis error propagates so the whole batch stays
pending and is redone.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

from pymongo.errors import ConnectionFailure, ExecutionTimeout, WTimeoutError

from services.delivery import metrics
from services.delivery.context import Request
from services.delivery.conversations import ConversationFlow
from services.delivery.history import HistoryFlow
from services.delivery.offline import OfflineQueue, valid_cursor
from services.delivery.outbox import Outbox
from services.delivery.receipts import ReceiptFlow
from services.delivery.send import SendFlow
from services.delivery.typing import TypingFlow
from shared.command_conn import CommandConnection
from shared.events import decode_command
from shared.logging import get_logger
from shared.protocol import (
    INTERNAL_ERROR,
    INVALID_MESSAGE,
    SERVICE_UNAVAILABLE,
    AckQueued,
    CreateConversation,
    FetchHistory,
    ListConversations,
    ReadReceipt,
    SendMessage,
    Sync,
    SyncRequired,
    TypingIndicator,
    encode,
)
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.settings import Settings
from shared.streams import Entry, decode_entries

log = get_logger(__name__)

MONGO_UNAVAILABLE = (ConnectionFailure, ExecutionTimeout, WTimeoutError)


def _ids(requests: list[Request]) -> dict[str, list[str | None]]:
    """Who and what a log line is about (the first few of a batch)."""
    head = requests[:10]
    return {
        "userId": [r.command.user_id for r in head],
        "connectionId": [r.command.connection_id for r in head],
        "requestId": [r.request_id for r in head],
    }


class Effects:
    """A handled batch's fan-out pipeline, and the count of what it queued for offline members."""

    __slots__ = ("offline", "outbox")

    def __init__(self, outbox: Outbox, offline: OfflineQueue) -> None:
        self.outbox = outbox
        self.offline = offline

    @property
    def commands(self) -> list[tuple[Any, ...]]:
        return self.outbox.commands

    async def flush(self) -> None:
        """Send the pipeline on the outbox's own connection, then act on its replies."""
        await self.offline.count_kept(await self.outbox.flush(), self.outbox.conn)

    async def settle(self, replies: list[Any]) -> None:
        """Act on the replies of the pipeline, sent by the reader ahead of its read."""
        await self.offline.count_kept(await self.outbox.settle(replies), self.outbox.conn)


class CommandRouter:
    def __init__(
        self,
        redis_client: RedisClient,
        settings: Settings,
        send: SendFlow,
        conversations: ConversationFlow,
        history: HistoryFlow,
        receipts: ReceiptFlow,
        typing: TypingFlow,
        offline: OfflineQueue,
        conn: CommandConnection | None = None,
    ) -> None:
        self.redis = redis_client
        self.conn = conn
        self.settings = settings
        self.send = send
        self.conversations = conversations
        self.history = history
        self.receipts = receipts
        self.typing = typing
        self.offline = offline

    async def handle(self, batches: dict[str, Sequence[Entry]]) -> Effects | None:
        """One batch read from one or more partitions: one insert, one fan-out pipeline.

        Returns the pipeline still to send (None: nothing to send). The
        partition reader sends it ahead of its next read, in the same write.
        """
        requests = [
            Request(stream, entry_id, command)
            for stream, entries in batches.items()
            for entry_id, command in decode_entries(stream, entries, decode_command)
        ]
        metrics.BATCH_SIZE.observe(len(requests))
        outbox = Outbox(self.redis, self.settings, self.conn)
        sends = [r for r in requests if isinstance(r.command.frame, SendMessage)]
        if sends:
            metrics.COMMANDS_BY_TYPE["send_message"].inc(len(sends))
            await self._guard(sends, outbox, self.send.handle(sends, outbox))
        for request in requests:
            if not isinstance(request.command.frame, SendMessage):
                await self._guard([request], outbox, self._one(request, outbox))
        return Effects(outbox, self.offline) if len(outbox) else None

    async def _guard(
        self, requests: list[Request], outbox: Outbox, work: Coroutine[Any, Any, None]
    ) -> None:
        try:
            await work
        except REDIS_ERRORS:
            raise
        except MONGO_UNAVAILABLE as exc:
            log.warning("mongodb unavailable", error=str(exc), **_ids(requests))
            for request in requests:
                request.error(outbox, SERVICE_UNAVAILABLE, "message store unavailable; retry")
        except Exception:
            log.exception("command failed", **_ids(requests))
            for request in requests:
                request.error(outbox, INTERNAL_ERROR, "internal error")

    async def _one(self, request: Request, outbox: Outbox) -> None:
        frame = request.command.frame
        metrics.COMMANDS_BY_TYPE[str(type(frame).__struct_config__.tag)].inc()
        if isinstance(frame, FetchHistory):
            await self.history.fetch(request, frame, outbox)
        elif isinstance(frame, Sync):
            await self.history.sync(request, frame, outbox)
        elif isinstance(frame, CreateConversation):
            await self.conversations.create(request, frame, outbox)
        elif isinstance(frame, ListConversations):
            await self.conversations.list(request, outbox)
        elif isinstance(frame, ReadReceipt):
            await self.receipts.handle(request, frame, outbox)
        elif isinstance(frame, TypingIndicator):
            await self.typing.handle(request, frame, outbox)
        elif isinstance(frame, AckQueued):
            await self._ack_queued(request, frame, outbox)
        else:
            request.error(outbox, INVALID_MESSAGE, "this request is not served by delivery")

    async def _ack_queued(self, request: Request, frame: AckQueued, outbox: Outbox) -> None:
        if not valid_cursor(frame.up_to):
            request.error(outbox, INVALID_MESSAGE, "upTo must be a cursor from queued_messages")
            return
        command = request.command
        floor, behind = await self.offline.ack(command.user_id, frame.up_to, outbox.conn)
        if behind:
            # Another device acknowledged entries this one never got: it must
            # close the gap with sync (an empty list means every conversation).
            request.reply(outbox, encode(SyncRequired(conversation_ids=[])))
        await self.offline.send_batch(
            outbox, command.user_id, command.gateway_id, command.connection_id, after=floor
        )
