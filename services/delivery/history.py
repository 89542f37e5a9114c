"""fetch_history and sync: pages of stored messages for members only."""

from __future__ import annotations

from services.delivery import metrics
from services.delivery.cache import ConversationCache
from services.delivery.context import Request
from services.delivery.heads import Heads
from services.delivery.outbox import Outbox
from services.delivery.recent import RecentCache
from services.delivery.store import Store
from shared.protocol import (
    CONVERSATION_NOT_FOUND,
    NOT_A_MEMBER,
    FetchHistory,
    History,
    Sync,
    SyncComplete,
    encode,
)

SYNC_PAGE = 100


class HistoryFlow:
    def __init__(
        self, store: Store, cache: ConversationCache, heads: Heads, recent: RecentCache
    ) -> None:
        self.store = store
        self.cache = cache
        self.heads = heads
        self.recent = recent

    async def fetch(self, request: Request, frame: FetchHistory, outbox: Outbox) -> None:
        conversation = await self.cache.get(frame.conversation_id)
        if conversation is None:
            request.error(outbox, CONVERSATION_NOT_FOUND, "no such conversation")
            return
        if request.command.user_id not in conversation.members:
            request.error(outbox, NOT_A_MEMBER, "you are not a member of this conversation")
            return
        await self.heads.count([conversation])  # the newest seq the cache must reach
        page = await self.recent.page(
            frame.conversation_id, frame.before_seq, frame.limit, conversation.last_seq, outbox.conn
        )
        if page is None:
            metrics.HISTORY_CACHE.labels(source="mongodb").inc()
            page = await self.store.history(frame.conversation_id, frame.before_seq, frame.limit)
        else:
            metrics.HISTORY_CACHE.labels(source="redis").inc()
        messages, has_more = page
        request.reply(
            outbox,
            encode(
                History(
                    conversation_id=frame.conversation_id,
                    messages=messages,
                    has_more=has_more,
                    request_id=frame.request_id,
                )
            ),
        )

    async def sync(self, request: Request, frame: Sync, outbox: Outbox) -> None:
        """Every message after each given seq, as history frames, then sync_complete.

        Read from MongoDB (the source of truth), never from caches, because
        sync is what repairs whatever a cache or a dropped push got wrong.
        """
        user_id = request.command.user_id
        ids = list(frame.conversations)
        conversations = await self.store.get_conversations(ids)
        for cid in ids:
            conversation = conversations.get(cid)
            if conversation is None:
                request.error(outbox, CONVERSATION_NOT_FOUND, f"no such conversation {cid}")
                continue
            if user_id not in conversation.participant_ids:
                request.error(outbox, NOT_A_MEMBER, f"you are not a member of {cid}")
                continue
            after = frame.conversations[cid]
            while True:
                messages = await self.store.after(cid, after, SYNC_PAGE + 1)
                more = len(messages) > SYNC_PAGE
                messages = messages[:SYNC_PAGE]
                if not messages:
                    break
                request.reply(
                    outbox,
                    encode(
                        History(
                            conversation_id=cid,
                            messages=messages,
                            has_more=more,
                            request_id=frame.request_id,
                        )
                    ),
                )
                after = messages[-1].seq
                if not more:
                    break
        request.reply(outbox, encode(SyncComplete(request_id=frame.request_id)))
