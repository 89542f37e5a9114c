"""Domain events trimmed by their stream's cap before metrics read them are
counted (``chat_domain_events_lost_total``), once across instances, and the
group's lag stops counting them as unread; on a real redis-server of the
test's own (the stream's name is fixed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from services.metrics.lost import LOST, LostEvents
from shared import keys
from shared.streams import ensure_group
from tests.support.cancel import cancel_at_random_moments
from tests.support.servers import RedisServer

STREAM, GROUP = keys.domain_event_stream(), keys.METRICS_GROUP


@pytest.fixture
async def own(tmp_path: Path) -> AsyncIterator[redis.Redis]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


async def append(client: redis.Redis, count: int, cap: int | None = None) -> None:
    """``count`` events; with ``cap`` trimmed exactly (delivery's ``~`` trims whole
    nodes of 100, too coarse for a small test)."""
    for i in range(count):
        await client.xadd(STREAM, {keys.STREAM_FIELD: b"e%d" % i}, maxlen=cap, approximate=False)


async def read(client: redis.Redis, count: int) -> int:
    replies = await client.xreadgroup(GROUP, "m1", {STREAM: ">"}, count=count)
    return sum(len(entries) for _, entries in replies)


def lost_total() -> float:
    return LOST._value.get()


async def lag(client: redis.Redis) -> int | None:
    (group,) = [g for g in await client.xinfo_groups(STREAM) if g["name"] == GROUP.encode()]
    return group["lag"]


async def test_trimmed_unread_events_are_counted_once(own: redis.Redis) -> None:
    await ensure_group(own, STREAM, GROUP)
    first, second = LostEvents(own), LostEvents(own)  # two instances of the service
    before = lost_total()
    await append(own, 10)
    assert await read(own, 5) == 5
    assert await first.check() == 0  # behind, but nothing unread is gone
    await append(own, 20, cap=8)  # metrics stalled: 17 never read were trimmed
    assert await first.check() == 17
    assert await lag(own) == 8  # what is left to read, not 25
    assert await first.check() == 0
    assert await second.check() == 0  # the same gap, already counted
    await append(own, 5, cap=8)  # still stalled: 5 more
    assert await second.check() == 5
    assert lost_total() - before == 22
    assert await read(own, 100) == 8  # catches up past the gap
    assert await lag(own) == 0  # Redis 7.0 said 22 here without the mend
    assert await first.check() == 0
    await append(own, 3, cap=8)
    assert await read(own, 100) == 3
    assert await first.check() == 0  # trimming what was read is no loss
    assert lost_total() - before == 22


async def test_no_stream_or_no_group_is_no_loss(own: redis.Redis) -> None:
    assert await LostEvents(own).check() == 0
    await append(own, 20, cap=5)  # no metrics group yet: nobody missed anything
    assert await LostEvents(own).check() == 0


async def test_a_gap_of_unknown_size_is_reported_once(own: redis.Redis) -> None:
    await ensure_group(own, STREAM, GROUP)
    await append(own, 10)
    # A group moved without its read counter (XGROUP SETID, no ENTRIESREAD):
    # Redis can no longer tell how many entries it has read.
    entries = await own.xrange(STREAM)
    await own.xgroup_setid(STREAM, GROUP, entries[2][0])
    await append(own, 10, cap=4)
    checker = LostEvents(own)
    assert await checker.check() == -1
    assert await checker.check() == 0
    assert await lag(own) == 4  # the counter is known again: what is left to read
    await append(own, 3, cap=4)
    assert await checker.check() == 3  # and later gaps have a size


async def test_the_periodic_check_survives_a_failed_one(
    own: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    checker = LostEvents(own)
    calls = 0
    real = checker.check

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a defect in the check")
        return await real()

    monkeypatch.setattr(checker, "check", flaky)
    task = asyncio.create_task(checker.run(0.01))
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while calls < 3:
            assert asyncio.get_running_loop().time() < deadline, "the checks stopped"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_periodic_check_ends_when_cancelled(own: redis.Redis) -> None:
    # Cancelled while a check's reply arrives, Python 3.11's wait_for (inside
    # redis-py) lost the cancel and the loop went on: shutdown waited for good.
    checker = LostEvents(own)
    await cancel_at_random_moments(lambda: checker.run(0.0005))


async def test_a_group_that_never_read_counts_its_gap(own: redis.Redis) -> None:
    # Metrics created its group, then was down before its first read: Redis
    # 7.0 reports that group's entries-read as nil, and the gap was logged as
    # of unknown size and not counted. Nothing could have been read: 22 lost.
    await ensure_group(own, STREAM, GROUP)
    await append(own, 10)
    await append(own, 20, cap=8)
    before = lost_total()
    checker = LostEvents(own)
    assert await checker.check() == 22
    assert lost_total() - before == 22
    assert await lag(own) == 8
    assert await checker.check() == 0  # counted once
