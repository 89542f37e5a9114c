"""MongoDB client factory and index creation (pymongo's async API).

Writes use majority write concern with journaling: ``message_ack`` promises
the message is durable, which on a replica set means on a majority.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from shared.settings import Settings

MongoDB = AsyncDatabase[dict[str, Any]]

CONVERSATIONS = "conversations"
MESSAGES = "messages"
USERS = "users"
READS = "reads"


def create_mongo(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(
        settings.mongodb_uri,
        serverSelectionTimeoutMS=settings.mongodb_timeout_ms,
        connectTimeoutMS=settings.mongodb_timeout_ms,
        socketTimeoutMS=max(settings.mongodb_timeout_ms * 3, 10_000),
        retryWrites=True,
        tz_aware=False,
    )


def database(client: AsyncMongoClient[dict[str, Any]], settings: Settings) -> MongoDB:
    return client.get_database(
        settings.mongodb_db, write_concern=WriteConcern(w="majority", j=True)
    )


async def ensure_indexes(db: MongoDB) -> None:
    """Create the indexes the queries rely on (idempotent).

    (conversationId, seq) is unique: it is what makes seq gapless and
    duplicate-free even if two delivery processes ever race on one
    conversation.
    """
    await db[MESSAGES].create_index(
        [("conversationId", ASCENDING), ("seq", ASCENDING)], unique=True, name="conv_seq"
    )
    await db[CONVERSATIONS].create_index([("participantIds", ASCENDING)], name="member")
    await db[READS].create_index(
        [("userId", ASCENDING), ("conversationId", ASCENDING)], name="user_conv"
    )


# FerretDB 1.24 (SQLite) never answers an `update` command of 100 or more
# statements, and holds its write lock meanwhile; MongoDB is indifferent.
BULK_CHUNK = 64


async def bulk_write_chunked(
    collection: AsyncCollection[dict[str, Any]], ops: Sequence[Any]
) -> None:
    """Unordered bulk write in chunks small enough for every supported server."""
    for start in range(0, len(ops), BULK_CHUNK):
        await collection.bulk_write(list(ops[start : start + BULK_CHUNK]), ordered=False)


async def mongo_ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    """True when the server answers a ping within the client's timeouts."""
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
