"""The held command connection on a real Redis: same replies as redis-py's
pipeline, errors in place, pipelines of several tasks answered in order, and
a lost or silent Redis turned into redis-py's errors and a fresh connection."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.command_conn import CommandConnection, held_connection
from shared.pubsub_conn import encode_command
from shared.redis_client import REDIS_ERRORS
from shared.scripts import execute, load_script
from tests.support.servers import RedisServer

Held = Callable[..., CommandConnection]


@pytest.fixture
def held(client: redis.Redis) -> Iterator[Held]:
    """held(timeout=...) -> a CommandConnection on the test Redis, closed at the end."""
    made: list[CommandConnection] = []

    def make(**options: Any) -> CommandConnection:
        made.append(CommandConnection(client, **options))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


async def _blocked(client: redis.Redis) -> int:
    return int((await client.info("clients"))["blocked_clients"])


async def _until_blocked(client: redis.Redis, more_than: int) -> None:
    """Until Redis holds one more blocked client (our blocking command arrived)."""
    deadline = asyncio.get_running_loop().time() + 5
    while await _blocked(client) <= more_than:
        assert asyncio.get_running_loop().time() < deadline, "the command never blocked"
        await asyncio.sleep(0.01)


def _stack(pipe, stream: str, key: str) -> None:  # type: ignore[no-untyped-def]
    pipe.incrby(key, 3)
    pipe.xadd(stream, {b"d": b"one"}, maxlen=100, approximate=True)
    pipe.hset(f"{key}:h", mapping={b"a": b"1", b"b": b"2"})
    pipe.hgetall(f"{key}:h")
    pipe.xreadgroup("g", "c", {stream: ">"}, count=10)
    pipe.publish(f"{key}:channel", b"nobody listens")
    pipe.set(f"{key}:s", 1.5)
    pipe.get(f"{key}:s")


async def test_replies_are_those_of_a_redis_py_pipeline(client: redis.Redis, held: Held) -> None:
    conn = held()
    replies = []
    for use_conn in (False, True):
        stream, key = f"s:{uuid.uuid4().hex}", f"k:{uuid.uuid4().hex}"
        await client.xgroup_create(stream, "g", id="0", mkstream=True)
        pipe = client.pipeline(transaction=False)
        _stack(pipe, stream, key)
        got = await (conn.execute(pipe) if use_conn else pipe.execute())
        entry_id = got[1]
        assert got[4] == [[stream.encode(), [(entry_id, {b"d": b"one"})]]]
        got[1] = got[4] = None  # ids differ between the two runs
        replies.append(got)
    assert replies[0] == replies[1] == [3, None, 2, {b"a": b"1", b"b": b"2"}, None, 0, True, b"1.5"]


async def test_error_replies_stay_in_place_or_raise_the_first(
    client: redis.Redis, held: Held
) -> None:
    conn = held()
    key = f"k:{uuid.uuid4().hex}"
    await client.set(key, b"text")
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.evalsha("0" * 40, 0)
    pipe.get(key)
    first, second, third = await conn.execute(pipe, raise_on_error=False)
    assert isinstance(first, ResponseError) and "not an integer" in str(first)
    assert isinstance(second, NoScriptError)
    assert third == b"text"
    with pytest.raises(ResponseError, match="not an integer"):
        await conn.execute(pipe)
    # The connection is still in step after the errors.
    check = client.pipeline(transaction=False)
    check.get(key)
    assert await conn.execute(check) == [b"text"]


async def test_scripts_execute_reloads_a_flushed_script_on_the_held_connection(
    client: redis.Redis, held: Held
) -> None:
    conn = held()
    fanout = load_script(client, "fanout")
    await client.script_flush()  # as after a Redis restart
    channels = [f"c:{uuid.uuid4().hex}" for _ in range(2)]
    ops = [("evalsha", (fanout.sha, 0, b"x", *channels), {})]
    assert await execute(client, ops, [fanout], conn) == [[0, 0]]


async def test_pipelines_of_many_tasks_are_answered_in_order(
    client: redis.Redis, held: Held
) -> None:
    conn = held()
    prefix = uuid.uuid4().hex

    async def worker(i: int) -> list[int]:
        seen = []
        for _ in range(20):
            pipe = client.pipeline(transaction=False)
            pipe.incr(f"{prefix}:{i}")
            pipe.incrby(f"{prefix}:{i}:x{i}", i)
            value, times_i = await conn.execute(pipe)
            assert times_i == value * i  # both replies are this task's own
            seen.append(value)
        return seen

    results = await asyncio.gather(*(worker(i) for i in range(1, 31)))
    assert all(seen == list(range(1, 21)) for seen in results)


class _CountingTransport:
    """The connection's transport, counting the writes made to it."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def abort(self) -> None:
        self.transport.abort()


async def test_pipelines_asked_for_in_one_pass_go_out_in_one_write(
    client: redis.Redis, held: Held
) -> None:
    """Forty tasks each sending a pipeline in the same pass of the loop (a burst of
    connects, each checking its admission): one write, every task its own replies."""
    conn = held()
    await conn.send([("PING",)], 5)  # connected
    protocol = conn._protocol
    assert protocol is not None and protocol.transport is not None
    counting = _CountingTransport(protocol.transport)
    protocol.transport = counting  # type: ignore[assignment]
    prefix = uuid.uuid4().hex
    replies = await asyncio.gather(
        *(
            conn.send([("INCRBY", f"{prefix}:{i}", i), ("GET", f"{prefix}:{i}")], 5)
            for i in range(40)
        )
    )
    assert replies == [[i, str(i).encode()] for i in range(40)]
    assert len(counting.writes) == 1
    await conn.send([("PING",)], 5)  # a later pass: a write of its own
    assert len(counting.writes) == 2


async def test_a_blocking_read_waits_past_the_timeout_by_its_block_time(
    client: redis.Redis, held: Held
) -> None:
    conn = held(timeout=0.2)
    stream = f"s:{uuid.uuid4().hex}"
    await client.xgroup_create(stream, "g", id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    pipe.xreadgroup("g", "c", {stream: ">"}, count=1, block=600)
    before = await _blocked(client)
    reading = asyncio.create_task(conn.execute(pipe, block_ms=600))
    await _until_blocked(client, before)
    await client.xadd(stream, {b"d": b"late"})
    [reply] = await reading
    assert reply[0][1][0][1] == {b"d": b"late"}
    # Without the block time added, a read blocked longer than the timeout fails.
    slow = client.pipeline(transaction=False)
    slow.xreadgroup("g", "c", {stream: ">"}, count=1, block=1000)
    with pytest.raises(RedisTimeoutError):
        await conn.execute(slow)


async def test_silent_redis_times_out_and_the_connection_is_replaced(
    client: redis.Redis, held: Held
) -> None:
    conn = held(timeout=0.3)
    key = f"k:{uuid.uuid4().hex}"
    try:
        await client.set(key, b"v")
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        assert await conn.execute(pipe) == [b"v"]  # connected before the pause
        ask_id = client.pipeline(transaction=False)
        ask_id.client_id()
        [before] = await conn.execute(ask_id)
        await client.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        with pytest.raises(RedisTimeoutError):
            await conn.execute(pipe)
        # The late reply to the timed-out GET must not answer the next call.
        other = client.pipeline(transaction=False)
        other.ping()
        other.strlen(key)
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            try:
                assert await conn.execute(other) == [True, 1]
                break
            except RedisTimeoutError:
                assert asyncio.get_running_loop().time() < deadline
        # A connection that stopped answering is not trusted again: it was replaced.
        [after] = await conn.execute(ask_id)
        assert after != before
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")


async def test_killed_redis_fails_waiting_calls_and_a_restarted_one_is_used_again(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "restart")
    server.start()
    client = redis.Redis.from_url(server.url)
    conn = CommandConnection(client)
    try:
        blocked = client.pipeline(transaction=False)
        blocked.blpop([f"l:{uuid.uuid4().hex}"], timeout=5)
        waiting = asyncio.create_task(conn.execute(blocked, block_ms=5000))
        await _until_blocked(client, 0)  # a server of its own: nobody else blocks
        server.kill9()
        with pytest.raises(REDIS_ERRORS):
            await waiting
        pipe = client.pipeline(transaction=False)
        pipe.ping()
        with pytest.raises(RedisConnectionError):
            await conn.execute(pipe)  # nobody listens: a clear error, not a hang
        server.start()
        assert await conn.execute(pipe) == [True]
    finally:
        conn.close()
        await client.aclose()
        server.stop()


async def test_password_and_database_of_the_url_are_used(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth", password="s3cret")
    server.start()
    key = f"k:{uuid.uuid4().hex}"
    try:
        client = redis.Redis.from_url(server.url.replace("/0", "/7"))
        conn = held_connection(client)
        assert conn is not None
        pipe = client.pipeline(transaction=False)
        pipe.set(key, b"in db 7")
        assert await conn.execute(pipe) == [True]
        assert await client.get(key) == b"in db 7"
        assert await redis.Redis.from_url(server.url).get(key) is None  # not db 0
        conn.close()
        await client.aclose()

        wrong = redis.Redis.from_url(server.url.replace("s3cret", "wrong"))
        bad = CommandConnection(wrong)
        with pytest.raises(RedisConnectionError, match="refused"):
            await bad.execute(pipe)
        bad.close()
        await wrong.aclose()
    finally:
        server.stop()


def test_numbers_are_written_as_redis_py_writes_them() -> None:
    assert encode_command("INCRBY", b"k", 3) == b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\n3\r\n"
    assert encode_command("SET", "k", 1.5).endswith(b"$3\r\n1.5\r\n")
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)  # type: ignore[arg-type]
