"""Store behaviour the code relies on, checked against the real FerretDB."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pymongo import UpdateOne

from services.delivery.store import IN_QUERY_FROM, find_by_ids
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


@pytest.mark.parametrize("count", [IN_QUERY_FROM - 1, IN_QUERY_FROM + 9])
async def test_lookups_by_id_find_what_exists_one_by_one_or_with_in(mongo, count: int) -> None:
    # Below IN_QUERY_FROM one find_one per id, from it one $in: the same answer.
    collection = mongo[f"limits_{uuid.uuid4().hex[:8]}"].docs
    await collection.insert_many([{"_id": f"d{i}", "n": i} for i in range(count + 20)])
    evens = range(0, 2 * count, 2)  # about half of them exist
    found = await find_by_ids(collection, [f"d{i}" for i in evens])
    assert sorted(doc["n"] for doc in found) == [i for i in evens if i < count + 20]
    assert await find_by_ids(collection, []) == []
