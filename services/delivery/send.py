"""The send flow: membership, gapless seq, idempotent persistence, fan-out.

For a batch of send_message commands of one partition:
1. look up each conversation (cached) and refuse non-members;
2. give each message the next seq of its conversation and insert the batch
   in order, with a message id derived from (sender, conversation,
   clientMessageId) or, with no clientMessageId, from the stream entry, so a
   redelivered entry or a retried send collides with the stored message
   instead of duplicating it;
3. on a collision, keep what went in, resolve the colliding message (a
   duplicate, or a stale seq counter that is reloaded) and continue;
4. then push to every member's devices (the sender's ack riding on the push
   to the sender's own channel), keep the message for members with no live
   connection, and record the batch's messages as one domain event.
The stream entries are acknowledged by the caller only after all of that.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from services.delivery import metrics
from services.delivery.cache import CachedConversation, ConversationCache
from services.delivery.context import Request
from services.delivery.heads import Heads
from services.delivery.offline import OfflineQueue, queued_form
from services.delivery.outbox import Outbox
from services.delivery.recent import RecentCache
from services.delivery.store import Store, message_to_doc
from shared.events import MessagesSent, SentMessage, encode_event
from shared.logging import get_logger
from shared.protocol import (
    CONVERSATION_NOT_FOUND,
    NOT_A_MEMBER,
    Message,
    MessageAck,
    MessagePush,
    SendMessage,
    encode,
)
from shared.settings import Settings

log = get_logger(__name__)

DUPLICATE_KEY = 11000


def _ack_frame(frame: SendMessage, message: Message) -> bytes:
    return encode(
        MessageAck(
            message=message,
            request_id=frame.request_id,
            client_message_id=frame.client_message_id,
        )
    )


def message_id(request: Request, frame: SendMessage) -> str:
    """Deterministic id: the same send (or the same stream entry) gives the same id.

    A clientMessageId is the sender's key within one conversation: a retry is
    always to the same conversation, and a client that numbers its messages
    per conversation must not have its second conversation's message taken
    for a repeat of the first's (and the first's pushed to the second's
    members, as happened when the conversation was not part of the key).
    """
    if frame.client_message_id is not None:
        basis = f"c\0{request.command.user_id}\0{frame.conversation_id}\0{frame.client_message_id}"
    else:
        basis = f"e\0{request.stream}\0{request.entry_id.decode()}"
    return hashlib.blake2b(basis.encode(), digest_size=12).hexdigest()


@dataclass(slots=True)
class _Pending:
    request: Request
    frame: SendMessage
    conversation: CachedConversation
    message_id: str
    message: Message | None = None
    duplicate: bool = False


def _check_counter(entry: CachedConversation, expected: int, before: Any) -> None:
    """The reply of a batch's ``seq_advance``: the counter held ``before``, this owner
    expected ``expected`` (persistence off, see ``SendFlow._number_only``)."""
    if isinstance(before, Exception):
        return  # not advanced: the redo numbers from the counter again, skipping nothing
    if int(before) > expected:
        metrics.SEQ_CONFLICTS.inc()
        log.error(
            "seq counter moved by another owner: seqs may repeat",
            conversationId=entry.conversation.id,
            expected=expected,
            found=int(before),
        )
        return  # read it again before the next message
    entry.counted = True


class SendFlow:
    def __init__(
        self,
        store: Store,
        cache: ConversationCache,
        heads: Heads,
        recent: RecentCache,
        offline: OfflineQueue,
        settings: Settings,
    ) -> None:
        self.store = store
        self.cache = cache
        self.heads = heads
        self.recent = recent
        self.offline = offline
        self.settings = settings

    async def handle(self, requests: list[Request], outbox: Outbox) -> None:
        frames: list[tuple[Request, SendMessage]] = [
            (r, r.command.frame) for r in requests if isinstance(r.command.frame, SendMessage)
        ]
        conversations = await self.cache.get_many(
            list(dict.fromkeys(f.conversation_id for _, f in frames))
        )
        pending: list[_Pending] = []
        seen: dict[str, _Pending] = {}
        repeats: list[tuple[Request, _Pending]] = []
        for request, frame in frames:
            conversation = conversations.get(frame.conversation_id)
            if conversation is None:
                request.error(outbox, CONVERSATION_NOT_FOUND, "no such conversation")
                continue
            if request.command.user_id not in conversation.members:
                request.error(outbox, NOT_A_MEMBER, "you are not a member of this conversation")
                continue
            mid = message_id(request, frame)
            if mid in seen:  # the same clientMessageId twice in one batch
                repeats.append((request, seen[mid]))
                continue
            item = _Pending(request, frame, conversation, mid)
            seen[mid] = item
            pending.append(item)

        await self.heads.count(item.conversation for item in pending)
        start = time.perf_counter()
        now = int(time.time() * 1000)
        if self.settings.persistence:
            await self._persist(pending)
            metrics.PERSIST_SECONDS.observe(time.perf_counter() - start)
            # Duplicates too: the batch that stored them may have failed
            # before its pipeline moved the head.
            newest: dict[str, int] = {}
            for item in pending:
                assert item.message is not None
                cid = item.message.conversation_id
                newest[cid] = max(newest.get(cid, 0), item.message.seq)
            for cid, seq in newest.items():
                self.heads.advance(outbox, cid, seq, now)
        else:
            self._number_only(pending, outbox, now)

        messages: list[Message] = []
        for item in pending:
            # The ack rides on the fan-out (to the sender's own channel). A
            # duplicate is fanned out again too: its first attempt may have
            # stored it and then failed (a crash, a store error) before any
            # fan-out, and members dedupe by message id.
            messages.append(self._fan_out(outbox, item))
        if messages:
            sent = [SentMessage(m.conversation_id, m.sender_id, m.content_type) for m in messages]
            outbox.domain_event(encode_event(MessagesSent(at=now, messages=sent)), len(sent))
        self.recent.add(outbox, messages)
        for request, original in repeats:
            assert original.message is not None
            self._ack(outbox, request, request.command.frame, original.message)  # type: ignore[arg-type]

    def _number_only(self, pending: list[_Pending], outbox: Outbox, now: int) -> None:
        """Persistence off (benchmark mode): seqs counted in Redis, nothing stored.

        As with persistence on, the partition's owner numbers messages from
        its cached counter, without a round trip: the conversation's head (see
        heads.py) is read when its entry is first used (taking a partition
        clears the cache) and is moved up to the batch's last seq by the
        batch's own fan-out pipeline, so a later owner goes on from there.
        With no store there is no unique index to arbitrate two owners racing
        (a paused owner whose lease lapsed): the move returns what the head
        held, and more than this owner expected means another owner numbered
        messages meanwhile. That is counted and logged and the head read
        again, but the messages of that window may share seqs. Until the
        move is answered the counter is not trusted: a batch whose pipeline
        failed is redone from the head, so no seq is skipped. Messages live
        only in pushes, offline queues and the recent cache; `message_ack` no
        longer means durable. Never for production.
        """
        entries = {item.conversation.conversation.id: item.conversation for item in pending}
        expected = {cid: entry.last_seq for cid, entry in entries.items()}
        for entry in entries.values():
            # Trusted again once this batch's move is answered as expected:
            # a batch whose pipeline failed or was lost unanswered is redone,
            # and then numbers from the head instead of past it.
            entry.counted = False
        for item in pending:
            entry = item.conversation
            entry.last_seq += 1
            item.message = self._message(item, entry.last_seq)
        for cid, entry in entries.items():
            self.heads.advance(
                outbox,
                cid,
                entry.last_seq,
                now,
                functools.partial(_check_counter, entry, expected[cid]),
            )

    def _message(self, item: _Pending, seq: int) -> Message:
        return Message(
            id=item.message_id,
            conversation_id=item.conversation.conversation.id,
            seq=seq,
            sender_id=item.request.command.user_id,
            content=item.frame.content,
            content_type=item.frame.content_type,
            sent_at=int(item.request.command.accepted_at * 1000),
            client_message_id=item.frame.client_message_id,
        )

    async def _persist(self, pending: list[_Pending]) -> None:
        remaining = pending
        while remaining:
            counters: dict[str, int] = {}
            docs = []
            for item in remaining:
                cid = item.conversation.conversation.id
                seq = counters.get(cid, item.conversation.last_seq) + 1
                counters[cid] = seq
                item.message = self._message(item, seq)
                docs.append(message_to_doc(item.message))
            inserted, error = await self.store.insert_messages(docs)
            for item in remaining[:inserted]:
                assert item.message is not None
                item.conversation.last_seq = item.message.seq
            if error is None:
                return
            write_errors = error.details.get("writeErrors") or []
            if not write_errors or write_errors[0].get("code") != DUPLICATE_KEY:
                raise error
            failed = remaining[inserted]
            existing = await self.store.message_by_id(failed.message_id)
            if existing is not None:
                failed.message = existing
                failed.duplicate = True
                metrics.DUPLICATES.inc()
                remaining = remaining[inserted + 1 :]
            else:
                # Our seq counter was behind the store (another owner, or a
                # crash before lastSeq moved): reload it and try again.
                cid = failed.conversation.conversation.id
                failed.conversation.last_seq = await self.store.max_seq(cid)
                metrics.SEQ_CONFLICTS.inc()
                log.info("seq counter reloaded", conversationId=cid)
                remaining = remaining[inserted:]

    def _ack(self, outbox: Outbox, request: Request, frame: SendMessage, message: Message) -> None:
        request.reply(outbox, _ack_frame(frame, message))

    def _fan_out(self, outbox: Outbox, item: _Pending) -> Message:
        """The push to every member's devices, with the sender's ack on the sender's
        channel; returns the message."""
        message = item.message
        assert message is not None
        request = item.request
        command = request.command
        members = item.conversation.conversation.participant_ids
        frame = encode(MessagePush(message=message))
        metrics.FANOUT_SIZE.observe(len(members))
        ack = _ack_frame(item.frame, message)
        reply = None
        if command.ack_on_user_channel:
            # On the push to the sender's own channel: no publish of its own.
            # The sender is a member (``handle`` refused the others from this entry).
            reply = (command.user_id, ack, request.request_type)
        else:
            request.reply(outbox, ack)  # from a gateway that predates it
        outbox.push_message(
            members,
            frame,
            message.conversation_id,
            queued_form(message),
            skip_connection=command.connection_id,
            accepted_at=command.accepted_at,
            reply=reply,
        )
        return message
