"""In-process cache of conversations: participants and the next seq.

Participant lists never change after creation (the protocol has no way to
add or remove members), so an entry never goes stale on membership. The seq
counter is only trusted by the owner of the conversation's partition, and
even then only as a first guess: the unique (conversationId, seq) index in
MongoDB is the arbiter, and a conflict reloads the counter from the store.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from services.delivery.store import Store
from shared.protocol import Conversation


@dataclass(slots=True)
class CachedConversation:
    conversation: Conversation
    members: frozenset[str]
    last_seq: int
    # last_seq was set from the conversation's head in Redis (heads.py) since
    # this entry was made; False until the owner has read it (the store's own
    # lastSeq is only the value at creation).
    counted: bool = False


class ConversationCache:
    def __init__(self, store: Store, capacity: int = 100_000) -> None:
        self.store = store
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedConversation] = OrderedDict()

    async def get_many(self, ids: list[str]) -> dict[str, CachedConversation]:
        found: dict[str, CachedConversation] = {}
        missing: list[str] = []
        for cid in ids:
            entry = self._entries.get(cid)
            if entry is None:
                missing.append(cid)
            else:
                self._entries.move_to_end(cid)
                found[cid] = entry
        if missing:
            for cid, conversation in (await self.store.get_conversations(missing)).items():
                found[cid] = self.put(conversation)
        return found

    async def get(self, conversation_id: str) -> CachedConversation | None:
        return (await self.get_many([conversation_id])).get(conversation_id)

    def put(self, conversation: Conversation, counted: bool = False) -> CachedConversation:
        entry = CachedConversation(
            conversation, frozenset(conversation.participant_ids), conversation.last_seq, counted
        )
        self._entries[conversation.id] = entry
        self._entries.move_to_end(conversation.id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def forget_seqs(self) -> None:
        """Drop seq knowledge (a partition changed hands): reload from the store."""
        self._entries.clear()
