"""The delivery partition reader on a real Redis: several partitions read and
acknowledged as one batch, failures leave entries pending, a released
partition is no longer handled."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from services.delivery.partitions import PartitionManager
from services.delivery.reader import PartitionReader
from shared import keys
from shared.command_conn import CommandConnection, held_connection
from shared.lease import Lease
from shared.settings import Settings
from shared.streams import Entry
from tests.support.chat import until
from tests.support.servers import own_database

GROUP = "delivery"


class Recorder:
    def __init__(self, failure: Exception | None = None) -> None:
        self.batches: list[dict[str, list[bytes]]] = []
        self.fail_next = 0
        self.failure = failure or RuntimeError("store down")

    async def __call__(self, batches: dict[str, Sequence[Entry]]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise self.failure
        self.batches.append({s: [body for _, body in e] for s, e in batches.items()})

    def bodies(self, stream: str) -> list[bytes]:
        return [body for batch in self.batches for body in batch.get(stream, [])]


@pytest.fixture(params=["pool", "held"])
def held(request: pytest.FixtureRequest) -> Callable[[redis.Redis], CommandConnection | None]:
    """Reads and XACKs through redis-py's pool, or on a held connection (as in delivery)."""
    if request.param == "pool":
        return lambda _client: None
    return held_connection  # type: ignore[return-value]


async def _run(reader: PartitionReader) -> asyncio.Task[None]:
    return asyncio.create_task(reader.run())


async def _stop(reader: PartitionReader, task: asyncio.Task[None]) -> None:
    reader.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def _add(client: redis.Redis, stream: str, *bodies: bytes) -> None:
    for body in bodies:
        await client.xadd(stream, {keys.STREAM_FIELD: body})


async def _pending(client: redis.Redis, stream: str) -> int:
    return int((await client.xpending(stream, GROUP))["pending"])


async def test_two_partitions_one_batch_then_acked(client, held) -> None:
    a, b = f"test:{uuid.uuid4().hex}:a", f"test:{uuid.uuid4().hex}:b"
    record = Recorder()
    reader = PartitionReader(
        client, GROUP, "d1", record, batch_size=100, block_ms=100, conn=held(client)
    )
    await reader.add(a)
    await reader.add(b)
    # Written before the reader runs: the first read finds both partitions.
    await _add(client, a, b"a1", b"a2")
    await _add(client, b, b"b1")
    task = await _run(reader)
    try:
        await until(lambda: len(record.bodies(a)) == 2 and len(record.bodies(b)) == 1, 5)
        assert record.batches[0] == {a: [b"a1", b"a2"], b: [b"b1"]}
        # Acknowledged with the next read, or at the latest when the reader stops.
        await _stop(reader, task)
        assert await _pending(client, a) == 0
        assert await _pending(client, b) == 0
    finally:
        await _stop(reader, task)


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("store down"),
        # Redis lost while the batch's fan-out was sent: redone once it is back.
        RedisConnectionError("connection lost"),
        ResponseError("OOM command not allowed"),
    ],
    ids=["handler", "redis-lost", "redis-refused"],
)
async def test_failed_batch_stays_pending_and_is_redone_first(
    client, held, failure: Exception
) -> None:
    a = f"test:{uuid.uuid4().hex}:a"
    record = Recorder(failure)
    record.fail_next = 1
    reader = PartitionReader(
        client, GROUP, "d1", record, batch_size=100, block_ms=100, conn=held(client)
    )
    await reader.add(a)
    await _add(client, a, b"m1", b"m2")
    task = await _run(reader)
    try:
        await until(lambda: record.bodies(a) == [b"m1", b"m2"], 5)
        await _stop(reader, task)
        assert await _pending(client, a) == 0
    finally:
        await _stop(reader, task)


async def test_entries_of_a_dead_consumer_are_taken_over_on_add(client, held) -> None:
    a = f"test:{uuid.uuid4().hex}:a"
    await client.xgroup_create(a, GROUP, id="0", mkstream=True)
    await _add(client, a, b"x1", b"x2")
    # A previous owner read them and died before acknowledging.
    await client.xreadgroup(GROUP, "dead", {a: ">"}, count=10)
    record = Recorder()
    reader = PartitionReader(
        client, GROUP, "d2", record, batch_size=100, block_ms=100, conn=held(client)
    )
    await reader.add(a)
    assert record.bodies(a) == [b"x1", b"x2"]
    # Acknowledged with the reader's next read, once they were handled.
    assert await _pending(client, a) == 2
    task = await _run(reader)
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while await _pending(client, a):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert record.bodies(a) == [b"x1", b"x2"]
    finally:
        await _stop(reader, task)


async def test_removed_partition_is_not_handled(client, held) -> None:
    a, b = f"test:{uuid.uuid4().hex}:a", f"test:{uuid.uuid4().hex}:b"
    record = Recorder()
    reader = PartitionReader(
        client, GROUP, "d1", record, batch_size=100, block_ms=100, conn=held(client)
    )
    await reader.add(a)
    await reader.add(b)
    task = await _run(reader)
    try:
        await reader.remove(b)
        await _add(client, b, b"not-mine")
        await _add(client, a, b"mine")
        await until(lambda: record.bodies(a) == [b"mine"], 5)
        assert record.bodies(b) == []
        assert reader.streams == [a]
    finally:
        await _stop(reader, task)


async def _two_partitions(
    redis_server: Any, instance: str, **env: str
) -> tuple[redis.Redis, Settings]:
    """A client of an emptied database of the test's own, and a delivery instance's
    settings with two partitions there."""
    url = own_database(redis_server.url)
    client = redis.Redis.from_url(url)
    await client.flushdb()
    settings = Settings.from_env(
        {
            "CHAT_REDIS_URL": url,
            "CHAT_COMMAND_PARTITIONS": "2",
            "CHAT_INSTANCE_ID": instance,
            **env,
        }
    )
    return client, settings


async def test_failed_takeover_gives_the_partition_back_and_other_leases_live_on(
    redis_server,
) -> None:
    """A takeover that fails must not hold up the rebalance (and with it the
    renewal of every other lease): the partition is released and taken over
    again by a later rebalance, its pending entries included."""
    client, settings = await _two_partitions(redis_server, "d-takeover", CHAT_BLOCK_MS="100")
    stream = keys.command_stream(0)
    await client.xgroup_create(stream, keys.DELIVERY_GROUP, id="0", mkstream=True)
    await _add(client, stream, b"left-by-the-dead")
    await client.xreadgroup(keys.DELIVERY_GROUP, "dead", {stream: ">"}, count=10)
    record = Recorder()
    record.fail_next = 1  # the store is down during the first takeover
    manager = PartitionManager(client, settings, record)
    try:
        await asyncio.wait_for(manager.rebalance(), 10)
        assert manager.owned == [1]
        other = Lease(client, keys.partition_resource(0), 10_000, "someone-else")
        assert await other.acquire()  # partition 0 is free for another instance
        await other.release()
        await asyncio.wait_for(manager.rebalance(), 10)
        assert manager.owned == [0, 1]
        assert record.bodies(stream) == [b"left-by-the-dead"]
    finally:
        await manager.stop()
        await client.flushdb()
        await client.aclose()


class Effects:
    """A batch's effects as the delivery router returns them: Redis commands
    sent ahead of the reader's next read (held connection) or on their own."""

    def __init__(
        self, client: redis.Redis, commands: list[tuple[Any, ...]], log: list[str], name: str
    ) -> None:
        self.client = client
        self.commands = commands
        self.log = log
        self.name = name

    async def settle(self, replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, Exception):
                self.log.append(f"failed {self.name}")
                raise reply
        self.log.append(f"settled {self.name}")

    async def flush(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for command in self.commands:
            pipe.execute_command(*command)
        await self.settle(await pipe.execute(raise_on_error=False))


class EffectsRecorder(Recorder):
    """Each batch's effect: INCR of a counter per body (fails while it holds text)."""

    def __init__(self, client: redis.Redis, counter: str) -> None:
        super().__init__()
        self.client = client
        self.counter = counter
        self.log: list[str] = []

    async def __call__(self, batches: dict[str, Sequence[Entry]]) -> Effects:  # type: ignore[override]
        await super().__call__(batches)
        names = [body.decode() for entries in batches.values() for _, body in entries]
        self.log.append(f"handled {','.join(names)}")
        return Effects(
            self.client, [("INCR", self.counter)] * len(names), self.log, ",".join(names)
        )


async def test_effects_settle_before_the_read_returns_and_only_then_are_acked(client) -> None:
    """On the held connection the effects go out with the next read, but
    their replies are acted on at once, not when the (blocking) read returns;
    the entries are acked only after that."""
    a = f"test:{uuid.uuid4().hex}:a"
    counter = f"test:{uuid.uuid4().hex}:n"
    record = EffectsRecorder(client, counter)
    reader = PartitionReader(
        client, GROUP, "d1", record, batch_size=100, block_ms=100, conn=held_connection(client)
    )
    reader.block_ms = 60_000  # a read that returns only when something arrives
    await reader.add(a)
    task = await _run(reader)
    try:
        await _add(client, a, b"m1")
        await until(lambda: "settled m1" in record.log, 10)
        assert int(await client.get(counter)) == 1
        # Acknowledged with the read after the one that carried the effects.
        assert await _pending(client, a) == 1
        await _add(client, a, b"m2")
        await until(lambda: "settled m2" in record.log, 10)
        assert await _pending(client, a) == 1  # m1 acked; m2 waits for the next read
        assert record.log == ["handled m1", "settled m1", "handled m2", "settled m2"]
        reader.stop()
        await _add(client, a, b"m3")  # ends the blocked read: handled, and the reader stops
    finally:
        await _stop(reader, task)
    # The last batch's effects, and every XACK, go out when the reader stops.
    assert record.log[-2:] == ["handled m3", "settled m3"]
    assert int(await client.get(counter)) == 3
    assert await _pending(client, a) == 0


async def _effects_reader(
    client: redis.Redis, conn: CommandConnection | None, counter_value: str | None = None
) -> tuple[str, str, EffectsRecorder, PartitionReader, asyncio.Task[None]]:
    """A running reader of a new stream whose batches INCR a new counter."""
    a = f"test:{uuid.uuid4().hex}:a"
    counter = f"test:{uuid.uuid4().hex}:n"
    if counter_value is not None:
        await client.set(counter, counter_value)
    record = EffectsRecorder(client, counter)
    reader = PartitionReader(client, GROUP, "d1", record, batch_size=100, block_ms=100, conn=conn)
    await reader.add(a)
    return a, counter, record, reader, await _run(reader)


async def test_refused_effects_leave_the_batch_pending_and_it_is_redone(client, held) -> None:
    # INCR is refused until the counter holds a number again.
    a, counter, record, reader, task = await _effects_reader(client, held(client), "not a number")
    try:
        await _add(client, a, b"m1")
        await until(lambda: record.log.count("failed m1") >= 2, 10)
        assert await _pending(client, a) == 1
        await client.set(counter, 0)
        await until(lambda: "settled m1" in record.log, 10)
        await until(lambda: not record.log[-1].startswith("failed"), 10)
    finally:
        await _stop(reader, task)
    assert await _pending(client, a) == 0
    assert int(await client.get(counter)) == 1  # redone until it went through, once
    assert record.log.count("settled m1") == 1


async def test_removed_partition_waits_for_its_effects(client) -> None:
    """remove() returns once the last batch's effects are out, so a new owner
    that takes the partition over does not redo what is being sent."""
    a, counter, record, reader, task = await _effects_reader(client, held_connection(client))
    try:
        await _add(client, a, b"m1")
        await until(lambda: "handled m1" in record.log, 10)
        await reader.remove(a)
        assert "settled m1" in record.log
        assert int(await client.get(counter)) == 1
    finally:
        await _stop(reader, task)
    assert await _pending(client, a) == 0


async def test_a_stopping_manager_takes_nothing_back_and_leaves_no_lease(redis_server) -> None:
    """stop() while the rebalance loop still runs (as the service's shutdown calls
    it): a partition released there must not be taken again by the next rebalance,
    which would redo the batch whose XACK was still to go with the next read and
    hold the lease past the process."""
    client, settings = await _two_partitions(
        redis_server,
        "d-stopping",
        CHAT_BLOCK_MS="300",
        CHAT_LEASE_TTL_MS="300",  # a rebalance every 0.1 s: several during stop()
    )
    streams = [keys.command_stream(p) for p in (0, 1)]
    record = Recorder()
    manager = PartitionManager(client, settings, record)
    loop_task = asyncio.create_task(manager.run())
    try:
        await until(lambda: manager.owned == [0, 1], 10)
        await _add(client, streams[0], b"m1")
        await until(lambda: record.bodies(streams[0]) == [b"m1"], 10)
        await manager.stop()
        assert record.bodies(streams[0]) == [b"m1"]  # not redone
        assert await _pending(client, streams[0]) == 0  # acknowledged on the way out
        for p in (0, 1):
            assert not await client.exists(keys.lease_key(keys.partition_resource(p))), p
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        await client.flushdb()
        await client.aclose()
