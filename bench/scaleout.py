"""Scale-out benchmark: 1, 2 and 3 gateways on standalone Redis and on a cluster.

    uv run python -m bench.scaleout [--clients 300] [--seconds 8] [--rate 400]

Clients are spread over the gateways, in conversations of 10 whose members
sit on different gateways, so every message crosses gateways. Senders send
at a fixed total rate; the report gives deliveries per second, end-to-end
latency percentiles (send to receipt, one clock: the generator's) and the
Redis commands executed per delivered message (INFO commandstats deltas over
every Redis node).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis
import uvloop

from bench import procstat
from shared.tokens import make_token
from tests.support.cluster import RedisCluster
from tests.support.servers import FerretDB, RedisServer
from tests.support.stack import SECRET, Stack

RESULTS = Path(__file__).with_name("results")
GROUP = 10


def commands_total(ports: list[int]) -> int:
    total = 0
    for port in ports:
        client = redis.Redis(port=port)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        total += sum(int(v["calls"]) for v in stats.values())
    return total


async def run_load(urls: list[str], clients: int, seconds: float, rate: float) -> dict[str, Any]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    users = [f"u{i}-{time.monotonic_ns()}" for i in range(clients)]
    sockets: list[Any] = []
    for i, user in enumerate(users):
        ws = await session.ws_connect(f"{urls[i % len(urls)]}?token={make_token(user, SECRET)}")
        await ws.receive()
        sockets.append(ws)
    conversations = []
    for g in range(0, clients, GROUP):
        owner = sockets[g]
        await owner.send_str(
            json.dumps({"type": "create_conversation", "participantIds": users[g + 1 : g + GROUP]})
        )
        while True:
            frame = json.loads((await owner.receive()).data)
            if frame["type"] == "conversation":
                conversations.append((g, frame["conversation"]["id"]))
                break
    latencies: list[float] = []
    delivered = 0
    expected = -1
    all_in = asyncio.Event()

    async def reader(ws: Any) -> None:
        nonlocal delivered
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame.get("type") == "message":
                delivered += 1
                latencies.append(time.time() - float(frame["message"]["content"]))
                if delivered == expected:
                    all_in.set()

    readers = [asyncio.create_task(reader(ws)) for ws in sockets]
    await asyncio.sleep(1)
    start = time.monotonic()
    sent = 0
    interval = 1 / rate
    while time.monotonic() - start < seconds:
        g, cid = conversations[sent % len(conversations)]
        sender = sockets[g + sent % GROUP]
        await sender.send_str(
            json.dumps(
                {"type": "send_message", "conversationId": cid, "content": repr(time.time())}
            )
        )
        sent += 1
        await asyncio.sleep(max(start + sent * interval - time.monotonic(), 0))
    expected = sent * (GROUP - 1)
    if delivered < expected:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), timeout=30)
    elapsed = time.monotonic() - start
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    await session.close()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(latencies[min(int(len(latencies) * p), len(latencies) - 1)] * 1000, 2)
            if latencies
            else -1
        )

    return {
        "sent": sent,
        "delivered": delivered,
        "expected": expected,
        "deliveries_per_s": round(delivered / elapsed, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rate", type=float, default=400, help="messages per second, total")
    args = parser.parse_args()
    procstat.raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    mongo = FerretDB(work / "ferretdb")
    mongo.start()
    rows = []
    try:
        for mode in ("standalone", "cluster"):
            for gateways in (1, 2, 3):
                name = f"{mode}-{gateways}"
                if mode == "standalone":
                    server = RedisServer(work / name)
                    server.start()
                    ports, stopper = [server.port], server.stop
                    stack = Stack(
                        server.url,
                        mongo.uri,
                        work / f"s-{name}",
                        CHAT_RATE_LIMITS="off",
                        CHAT_LOG_LEVEL="WARNING",
                    )
                else:
                    cluster = RedisCluster(work / name)
                    cluster.start()
                    ports, stopper = [n.port for n in cluster.nodes], cluster.stop
                    stack = Stack(
                        "redis://unused:1/0", mongo.uri, work / f"s-{name}",
                        CHAT_REDIS_CLUSTER_NODES=cluster.startup_nodes,
                        CHAT_RATE_LIMITS="off", CHAT_LOG_LEVEL="WARNING",
                    )  # fmt: skip
                try:
                    gws = [stack.start("gateway") for _ in range(gateways)]
                    for service in ("delivery", "presence", "metrics"):
                        stack.start(service)
                    before = commands_total(ports)
                    result = uvloop.run(
                        run_load([g.ws_url for g in gws], args.clients, args.seconds, args.rate)
                    )
                    used = commands_total(ports) - before
                    result.update({
                        "mode": mode, "gateways": gateways,
                        "redis_commands_per_delivery": round(used / max(result["delivered"], 1), 2),
                    })  # fmt: skip
                    rows.append(result)
                    sys.stderr.write(json.dumps(result) + "\n")
                finally:
                    stack.stop()
                    stopper()
    finally:
        mongo.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaleout.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
