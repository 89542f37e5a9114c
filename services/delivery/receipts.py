"""read_receipt: a monotonic per-user read marker, pushed to the other members."""

from __future__ import annotations

import time

from services.delivery.cache import ConversationCache
from services.delivery.context import Request
from services.delivery.outbox import Outbox
from services.delivery.store import Store
from shared.protocol import (
    CONVERSATION_NOT_FOUND,
    INVALID_MESSAGE,
    MESSAGE_NOT_FOUND,
    NOT_A_MEMBER,
    ReadReceipt,
    ReadReceiptPush,
    encode,
)


class ReceiptFlow:
    def __init__(self, store: Store, cache: ConversationCache) -> None:
        self.store = store
        self.cache = cache

    async def handle(self, request: Request, frame: ReadReceipt, outbox: Outbox) -> None:
        user_id = request.command.user_id
        if frame.message_id is not None:
            message = await self.store.message_by_id(frame.message_id)
        elif frame.conversation_id is not None and frame.seq is not None:
            message = await self.store.message_at(frame.conversation_id, frame.seq)
        else:
            request.error(
                outbox, INVALID_MESSAGE, "read_receipt needs messageId or conversationId + seq"
            )
            return
        if message is None:
            request.error(outbox, MESSAGE_NOT_FOUND, "no such message")
            return
        conversation = await self.cache.get(message.conversation_id)
        if conversation is None:
            request.error(outbox, CONVERSATION_NOT_FOUND, "no such conversation")
            return
        if user_id not in conversation.members:
            request.error(outbox, NOT_A_MEMBER, "you are not a member of this conversation")
            return
        if not await self.store.advance_read(
            message.conversation_id, user_id, message.seq, message.id
        ):
            return  # the marker never moves back; an older receipt changes nothing
        push = ReadReceiptPush(
            conversation_id=message.conversation_id,
            user_id=user_id,
            message_id=message.id,
            seq=message.seq,
            read_at=int(time.time() * 1000),
        )
        outbox.push_users(
            conversation.conversation.participant_ids,
            encode(push),
            skip_connection=request.command.connection_id,
        )
