"""typing_indicator: pushed to the other members' devices, lapsing by itself.

A ``true`` that is not refreshed within the TTL is followed by a ``false``
from here, so a receiver never shows a typist forever even if the typist's
client vanished. Typing is never queued for offline members.
"""

from __future__ import annotations

import asyncio
import time

from services.delivery.cache import ConversationCache
from services.delivery.context import Request
from services.delivery.outbox import Outbox
from shared.cancel import raise_if_cancelled
from shared.logging import get_logger
from shared.protocol import (
    CONVERSATION_NOT_FOUND,
    NOT_A_MEMBER,
    TypingIndicator,
    TypingPush,
    encode,
)
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.settings import Settings

log = get_logger(__name__)

TYPING_TTL_SECONDS = 5.0
LAPSE_CHECK_SECONDS = 0.25  # a lapsed typist is announced at most this late


class TypingFlow:
    def __init__(
        self, cache: ConversationCache, redis_client: RedisClient, settings: Settings
    ) -> None:
        self.cache = cache
        self.redis = redis_client
        self.settings = settings
        # (conversation, user) -> (deadline, members to tell)
        self._typing: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._someone_typing = asyncio.Event()  # the lapse loop sleeps on it while nobody types

    async def handle(self, request: Request, frame: TypingIndicator, outbox: Outbox) -> None:
        user_id = request.command.user_id
        conversation = await self.cache.get(frame.conversation_id)
        if conversation is None:
            request.error(outbox, CONVERSATION_NOT_FOUND, "no such conversation")
            return
        if user_id not in conversation.members:
            request.error(outbox, NOT_A_MEMBER, "you are not a member of this conversation")
            return
        others = [m for m in conversation.conversation.participant_ids if m != user_id]
        key = (frame.conversation_id, user_id)
        if frame.is_typing:
            self._typing[key] = (time.monotonic() + TYPING_TTL_SECONDS, others)
            self._someone_typing.set()
        elif (
            self._typing.pop(key, None) is None
            and request.command.accepted_at < time.time() - TYPING_TTL_SECONDS
        ):
            return  # a stale "stopped" for a typist that already lapsed
        push = TypingPush(
            conversation_id=frame.conversation_id,
            user_id=user_id,
            is_typing=frame.is_typing,
            timestamp=int(time.time() * 1000),
        )
        outbox.push_users(others, encode(push))

    async def lapse_loop(self) -> None:
        """Send ``isTyping: false`` for every typist whose TTL ran out."""
        while True:
            raise_if_cancelled()
            if not self._typing:
                # Nobody types: no timer at all (an idle worker would otherwise
                # wake four times a second for nothing).
                self._someone_typing.clear()
                await self._someone_typing.wait()
            await asyncio.sleep(LAPSE_CHECK_SECONDS)
            now = time.monotonic()
            expired = [k for k, (deadline, _) in self._typing.items() if deadline <= now]
            if not expired:
                continue
            outbox = Outbox(self.redis, self.settings)
            for key in expired:
                _, others = self._typing.pop(key)
                conversation_id, user_id = key
                push = TypingPush(
                    conversation_id=conversation_id,
                    user_id=user_id,
                    is_typing=False,
                    timestamp=int(time.time() * 1000),
                )
                outbox.push_users(others, encode(push))
            try:
                await outbox.flush()
            except REDIS_ERRORS as exc:
                log.warning("typing lapse publish failed", error=str(exc))
