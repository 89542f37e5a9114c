"""MongoDB access of the delivery service: conversations, messages, read markers.

FerretDB's SQLite backend filters ``_id`` equality in SQLite and everything
else (``$in`` included) in Go, some thirteen times slower per document it
scans (finding the last of 25,000 documents: 79 against 1,030 ms), and it
uses no index for either. So a few documents are looked up by
``_id`` one at a time (concurrently, on pooled connections), and many with
one ``$in`` (``find_by_ids``); on MongoDB both are index lookups.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.mongo import BULK_CHUNK, CONVERSATIONS, MESSAGES, READS, MongoDB
from shared.protocol import Conversation, Message

Doc = dict[str, Any]


def message_from_doc(doc: Doc) -> Message:
    return Message(
        id=doc["_id"],
        conversation_id=doc["conversationId"],
        seq=int(doc["seq"]),
        sender_id=doc["senderId"],
        content=doc["content"],
        content_type=doc["contentType"],
        sent_at=int(doc["sentAt"]),
        client_message_id=doc.get("clientMessageId"),
    )


def message_to_doc(message: Message) -> Doc:
    doc: Doc = {
        "_id": message.id,
        "conversationId": message.conversation_id,
        "seq": message.seq,
        "senderId": message.sender_id,
        "content": message.content,
        "contentType": message.content_type,
        "sentAt": message.sent_at,
    }
    if message.client_message_id is not None:
        doc["clientMessageId"] = message.client_message_id
    return doc


def conversation_from_doc(doc: Doc) -> Conversation:
    return Conversation(
        id=doc["_id"],
        participant_ids=list(doc["participantIds"]),
        created_at=int(doc["createdAt"]),
        last_seq=int(doc.get("lastSeq", 0)),
        title=doc.get("title"),
    )


class Store:
    def __init__(self, db: MongoDB) -> None:
        self.db = db
        self.conversations = db[CONVERSATIONS]
        self.messages = db[MESSAGES]
        self.reads = db[READS]

    # --- conversations -------------------------------------------------------

    async def get_conversations(self, ids: list[str]) -> dict[str, Conversation]:
        docs = await find_by_ids(self.conversations, ids)
        return {doc["_id"]: conversation_from_doc(doc) for doc in docs}

    async def insert_conversation(self, conversation: Conversation, creator: str) -> None:
        doc: Doc = {
            "_id": conversation.id,
            "participantIds": conversation.participant_ids,
            "createdAt": conversation.created_at,
            "createdBy": creator,
        }
        if conversation.title is not None:
            doc["title"] = conversation.title
        await self.conversations.insert_one(doc)

    async def list_for_user(self, user_id: str) -> list[Conversation]:
        """Every conversation of the user (the caller orders them by their heads)."""
        cursor = self.conversations.find({"participantIds": user_id})
        return [conversation_from_doc(doc) async for doc in cursor]

    # --- messages ----------------------------------------------------------------

    async def insert_messages(self, docs: list[Doc]) -> tuple[int, BulkWriteError | None]:
        """Insert in order; returns how many went in and the error that stopped it."""
        # In chunks: FerretDB 1.24 stops answering large write commands. The
        # chunks go in order and stop at the first error, as one ordered
        # insert would.
        inserted = 0
        for start in range(0, len(docs), BULK_CHUNK):
            chunk = docs[start : start + BULK_CHUNK]
            try:
                await self.messages.insert_many(chunk, ordered=True)
            except BulkWriteError as exc:
                return inserted + int(exc.details.get("nInserted", 0)), exc
            inserted += len(chunk)
        return inserted, None

    async def message_by_id(self, message_id: str) -> Message | None:
        doc = await self.messages.find_one({"_id": message_id})
        return message_from_doc(doc) if doc else None

    async def message_at(self, conversation_id: str, seq: int) -> Message | None:
        doc = await self.messages.find_one({"conversationId": conversation_id, "seq": seq})
        return message_from_doc(doc) if doc else None

    async def max_seq(self, conversation_id: str) -> int:
        newest = await self.newest(conversation_id)
        return newest[0] if newest else 0

    async def newest(self, conversation_id: str) -> tuple[int, int] | None:
        """(seq, sentAt) of the conversation's newest stored message, None for none."""
        doc = await self.messages.find_one(
            {"conversationId": conversation_id},
            sort=[("seq", DESCENDING)],
            projection=["seq", "sentAt"],
        )
        return (int(doc["seq"]), int(doc["sentAt"])) if doc else None

    async def history(
        self, conversation_id: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages before ``before_seq``, ascending, and whether more exist."""
        query: Doc = {"conversationId": conversation_id}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        cursor = self.messages.find(query).sort("seq", DESCENDING).limit(limit + 1)
        docs = [doc async for doc in cursor]
        has_more = len(docs) > limit
        return [message_from_doc(d) for d in reversed(docs[:limit])], has_more

    async def after(self, conversation_id: str, after_seq: int, limit: int) -> list[Message]:
        """Messages with seq > ``after_seq``, ascending, at most ``limit``."""
        cursor = (
            self.messages.find({"conversationId": conversation_id, "seq": {"$gt": after_seq}})
            .sort("seq", 1)
            .limit(limit)
        )
        return [message_from_doc(d) async for d in cursor]

    # --- read markers -----------------------------------------------------------------

    async def advance_read(
        self, conversation_id: str, user_id: str, seq: int, message_id: str
    ) -> bool:
        """Move the user's read marker forward; False when it was already past ``seq``.

        A receipt equal to the marker still counts (True): the marker may have
        been moved there by the user's own message, and the other members have
        not been told yet that everything before it was read.
        """
        now = int(time.time() * 1000)
        result = await self.reads.update_one(
            {"_id": f"{conversation_id}:{user_id}", "seq": {"$lte": seq}},
            {
                "$set": {
                    "conversationId": conversation_id,
                    "userId": user_id,
                    "seq": seq,
                    "messageId": message_id,
                    "readAt": now,
                }
            },
        )
        if result.matched_count:
            return True
        existing = await self.reads.find_one({"_id": f"{conversation_id}:{user_id}"})
        if existing is not None:
            return False
        try:
            await self.reads.insert_one(
                {
                    "_id": f"{conversation_id}:{user_id}",
                    "conversationId": conversation_id,
                    "userId": user_id,
                    "seq": seq,
                    "messageId": message_id,
                    "readAt": now,
                }
            )
        except DuplicateKeyError:
            # Lost a race with a concurrent first receipt; retry the conditional update.
            return await self.advance_read(conversation_id, user_id, seq, message_id)
        return True

    async def read_seqs(self, user_id: str, conversation_ids: list[str]) -> dict[str, int]:
        docs = await find_by_ids(self.reads, [f"{cid}:{user_id}" for cid in conversation_ids])
        return {doc["conversationId"]: int(doc["seq"]) for doc in docs}


# From this many ids on, one ``$in`` query. Measured on FerretDB 1.24
# (SQLite), 5,000 documents: 32 lookups by ``_id`` took 216 ms against 285 ms
# for one ``$in``, 64 took 528 against 272; both grow with the collection
# (500 read markers among 25,000: about 15 s one by one, 1.75 s with ``$in``).
IN_QUERY_FROM = 32


async def find_by_ids(collection: AsyncCollection[Doc], ids: list[str]) -> list[Doc]:
    """The documents of ``ids`` that exist, in no particular order."""
    if len(ids) >= IN_QUERY_FROM:
        return [doc async for doc in collection.find({"_id": {"$in": ids}})]
    docs = await asyncio.gather(*(collection.find_one({"_id": i}) for i in ids))
    return [doc for doc in docs if doc is not None]
