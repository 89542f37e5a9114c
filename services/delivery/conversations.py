"""create_conversation and list_conversations."""

from __future__ import annotations

import hashlib
import time

from pymongo.errors import DuplicateKeyError

from services.delivery.cache import ConversationCache
from services.delivery.context import Request
from services.delivery.heads import Heads
from services.delivery.outbox import Outbox
from services.delivery.store import Store
from shared.events import ConversationCreated, encode_event
from shared.protocol import (
    INVALID_MESSAGE,
    Conversation,
    ConversationFrame,
    Conversations,
    CreateConversation,
    encode,
)

LIST_LIMIT = 500


def conversation_id(request: Request) -> str:
    """Derived from the stream entry, so a redone create finds its own conversation."""
    basis = f"{request.stream}\0{request.entry_id.decode()}"
    return hashlib.blake2b(basis.encode(), digest_size=12).hexdigest()


class ConversationFlow:
    def __init__(self, store: Store, cache: ConversationCache, heads: Heads) -> None:
        self.store = store
        self.cache = cache
        self.heads = heads

    async def create(self, request: Request, frame: CreateConversation, outbox: Outbox) -> None:
        creator = request.command.user_id
        participants = sorted({creator, *frame.participant_ids})
        if len(participants) < 2:
            request.error(
                outbox, INVALID_MESSAGE, "participantIds must name at least one other user"
            )
            return
        now = int(time.time() * 1000)
        conversation = Conversation(
            id=conversation_id(request),
            participant_ids=participants,
            created_at=now,
            last_seq=0,
            title=frame.title,
        )
        try:
            await self.store.insert_conversation(conversation, creator)
            # Just made: no message of it was ever numbered, so there is no
            # head to read before its first; one at 0 saves a list of it
            # from looking for messages in the store.
            self.cache.put(conversation, counted=True)
            self.heads.advance(outbox, conversation.id, 0, now)
        except DuplicateKeyError:
            existing = (await self.store.get_conversations([conversation.id]))[conversation.id]
            conversation = existing
            self.cache.put(conversation)
        request.reply(
            outbox,
            encode(ConversationFrame(conversation=conversation, request_id=frame.request_id)),
        )
        outbox.push_users(
            participants,
            encode(ConversationFrame(conversation=conversation)),
            skip_connection=request.command.connection_id,
        )
        outbox.domain_event(
            encode_event(
                ConversationCreated(
                    conversation_id=conversation.id,
                    creator_id=creator,
                    participants=len(participants),
                    at=now,
                )
            )
        )

    async def list(self, request: Request, outbox: Outbox) -> None:
        """The user's conversations, most recently active first, at most ``LIST_LIMIT``."""
        user_id = request.command.user_id
        conversations = await self.store.list_for_user(user_id)
        heads = await self.heads.read(conversations)
        conversations.sort(key=lambda c: heads[c.id].at, reverse=True)
        conversations = conversations[:LIST_LIMIT]
        reads = await self.store.read_seqs(user_id, [c.id for c in conversations])
        for conversation in conversations:
            conversation.last_seq = heads[conversation.id].seq
            conversation.unread_count = max(
                conversation.last_seq - reads.get(conversation.id, 0), 0
            )
        request.reply(
            outbox,
            encode(Conversations(conversations=conversations, request_id=request.request_id)),
        )
