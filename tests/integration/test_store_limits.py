"""Store behaviour the code relies on, checked against the real FerretDB."""

from __future__ import annotations

import asyncio
import uuid

from pymongo import UpdateOne

from shared.mongo import BULK_CHUNK, bulk_write_chunked


async def test_large_bulk_updates_complete_in_chunks(mongo) -> None:
    # FerretDB 1.24 never answers an update command of 100+ statements; the
    # chunked writer must finish, with every document written.
    collection = mongo[f"limits_{uuid.uuid4().hex[:8]}"].users
    ops = [
        UpdateOne({"_id": f"u{i}"}, {"$max": {"lastSeen": i}, "$set": {"n": i}}, upsert=True)
        for i in range(3 * BULK_CHUNK + 7)
    ]
    await asyncio.wait_for(bulk_write_chunked(collection, ops), timeout=30)
    assert await collection.count_documents({}) == len(ops)
    assert (await collection.find_one({"_id": "u150"}))["lastSeen"] == 150
