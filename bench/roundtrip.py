"""``python -m bench.roundtrip``: client CPU per Redis round trip, redis-py pool vs held connection.

The delivery service pays a few round trips per batch. This measures one of
them, a fan-out-like pipeline (two PUBLISH, an XADD with MAXLEN ~, an
INCRBY), sent ``--rounds`` times in a row from one task on uvloop, against a
private redis-server on 127.0.0.1: once through redis-py's ``Pipeline``
(connection from the pool, retry wrapper, a timeout scope per reply) and once
through ``shared.command_conn.CommandConnection`` (same command building and
reply callbacks, a held connection, hiredis parsing in ``data_received``).
CPU is this process's (user + system: the socket writes are included), so
Redis's own share is not in it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as redis
import uvloop

from shared.command_conn import CommandConnection
from tests.support.servers import RedisServer


def _stack(pipe: Any) -> None:
    pipe.publish("user:a", b"x" * 200)
    pipe.publish("user:b", b"x" * 200)
    pipe.xadd("events", {b"d": b"y" * 100}, maxlen=1000, approximate=True)
    pipe.incrby("counter", 2)


async def _measure(run: Callable[[], Awaitable[Any]], rounds: int) -> float:
    for _ in range(min(rounds // 10, 500)):  # warm up
        await run()
    start = time.process_time()
    for _ in range(rounds):
        await run()
    return (time.process_time() - start) / rounds * 1e6


async def _main(url: str, rounds: int) -> dict[str, float]:
    client = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url))
    conn = CommandConnection(client)

    async def pooled() -> Any:
        pipe = client.pipeline(transaction=False)
        _stack(pipe)
        return await pipe.execute()

    async def held() -> Any:
        pipe = client.pipeline(transaction=False)
        _stack(pipe)
        return await conn.execute(pipe)

    try:
        assert (await pooled())[:2] == (await held())[:2] == [0, 0]
        results: dict[str, float] = {}
        for _ in range(2):  # interleaved, so drift hits both alike
            for name, run in (("redis-py Pipeline", pooled), ("CommandConnection", held)):
                cost = await _measure(run, rounds)
                results[name] = min(results.get(name, cost), cost)
        return results
    finally:
        conn.close()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            results = uvloop.run(_main(server.url, args.rounds))
        finally:
            server.stop()
    for name, cost in results.items():
        sys.stdout.write(f"{name:>20}: {cost:6.1f} µs client CPU per round trip\n")


if __name__ == "__main__":
    main()
