"""Delivery service: stores every message and fans it out (a stream worker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from pymongo.errors import PyMongoError

from services.delivery.cache import ConversationCache
from services.delivery.commands import CommandRouter
from services.delivery.connect import ConnectFlow
from services.delivery.conversations import ConversationFlow
from services.delivery.heads import Heads
from services.delivery.history import HistoryFlow
from services.delivery.offline import OfflineQueue
from services.delivery.partitions import PartitionManager
from services.delivery.receipts import ReceiptFlow
from services.delivery.recent import RecentCache
from services.delivery.send import SendFlow
from services.delivery.store import Store
from services.delivery.typing import TypingFlow
from shared import keys
from shared.cancel import raise_if_cancelled
from shared.command_conn import held_connection
from shared.logging import get_logger
from shared.mongo import MongoDB, create_mongo, database, ensure_indexes, mongo_ping
from shared.redis_client import create_redis, wait_for_redis
from shared.settings import Settings
from shared.streams import GroupConsumer
from shared.web import READY_CHECKS, REDIS, SETTINGS, base_app

log = get_logger(__name__)

PARTITIONS = web.AppKey("partitions", PartitionManager)
# After a short batch of connection events, let the next ones gather for this
# long (see presence's EVENTS_LINGER_MS): a burst of reconnects then reads its
# offline queues in a few pipelines. A device's queued_messages may come this
# much later; a lone connect's still goes out as soon as the read returns it.
CONNECTS_LINGER_MS = 20


def create_app(settings: Settings) -> web.Application:
    app = base_app(settings, "delivery", create_redis(settings))
    app.cleanup_ctx.append(_worker)
    return app


async def _worker(app: web.Application) -> AsyncIterator[None]:
    settings, redis_client = app[SETTINGS], app[REDIS]
    await wait_for_redis(redis_client)
    mongo = create_mongo(settings)
    db = database(mongo, settings)
    app[READY_CHECKS].append(lambda: mongo_ping(mongo))
    store = Store(db)
    cache = ConversationCache(store)
    recent = RecentCache(redis_client, settings.history_cache_size)
    offline = OfflineQueue(redis_client, settings)
    typing = TypingFlow(cache, redis_client, settings)
    # The fan-out pipeline of every batch goes out on one held connection.
    conn = held_connection(redis_client)
    heads = Heads(redis_client, store, settings, conn)
    router = CommandRouter(
        redis_client,
        settings,
        send=SendFlow(store, cache, heads, recent, offline, settings),
        conversations=ConversationFlow(store, cache, heads),
        history=HistoryFlow(store, cache, heads, recent),
        receipts=ReceiptFlow(store, cache),
        typing=typing,
        offline=offline,
        conn=conn,
    )
    # Connect bursts read hundreds of offline queues per batch: on a held
    # connection of their own, so the fan-out pipelines on ``conn`` are not
    # answered behind those replies.
    connects_conn = held_connection(redis_client)
    # A new partition owner must not trust seq counters from before.
    partitions = PartitionManager(
        redis_client, settings, router.handle, on_acquire=lambda _p: cache.forget_seqs()
    )
    app[PARTITIONS] = partitions
    connects = GroupConsumer(
        redis_client,
        keys.connection_event_stream(),
        keys.DELIVERY_GROUP,
        settings.instance_id,
        ConnectFlow(redis_client, settings, offline, connects_conn).handle,
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        reclaim_idle_ms=settings.reclaim_idle_ms,
        trim_seconds=settings.stream_trim_seconds,
        linger_ms=CONNECTS_LINGER_MS,
    )
    tasks = [
        asyncio.create_task(_start_partitions(partitions, db), name="partitions"),
        asyncio.create_task(connects.run(), name="connect-events"),
        asyncio.create_task(typing.lapse_loop(), name="typing-lapse"),
    ]
    log.info("delivery started")
    yield
    connects.stop()
    await partitions.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for held in (conn, connects_conn):
        if held is not None:
            held.close()
    await mongo.close()


async def _start_partitions(partitions: PartitionManager, db: MongoDB) -> None:
    """Create indexes (retrying while MongoDB is down) before taking any work."""
    while True:
        raise_if_cancelled()  # retries while MongoDB is down: a lost cancel must end it
        try:
            await ensure_indexes(db)
            break
        except PyMongoError as exc:
            log.warning("index creation failed; retrying", error=str(exc))
            await asyncio.sleep(1)
    await partitions.run()
