"""Connection-lifecycle benchmarks: presence transitions and reconnect storms.

    uv run python -m bench.lifecycle presence [--users 2000] [--killed 10000]
    uv run python -m bench.lifecycle storm [--users 5000] [--queued 20]

``presence`` measures presence transitions per second through the whole path
(WebSocket connect/close at a gateway -> connection-event stream -> presence
service scripts -> state), then connects ``--killed`` users to one gateway,
kills it with SIGKILL and times how long until every one of them is offline.
``storm`` fills the offline queues of ``--users`` users with ``--queued``
messages each, then reconnects them all at once and times until every queued
message is delivered and acknowledged; it reports each service's peak RSS.
Clients run in worker processes (aiohttp on uvloop) so the generator is not
the bottleneck; results are printed as JSON and written to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench import procstat
from shared import keys
from shared.tokens import make_token
from tests.support.servers import FerretDB, RedisServer
from tests.support.stack import SECRET, Stack

RESULTS = Path(__file__).with_name("results")
WORKERS = 4


def _worker(url: str, users: list[str], commands: Any, events: Any) -> None:
    """Hold one connection per user; obey 'open', 'close', 'drain' commands."""
    procstat.raise_nofile()
    import aiohttp
    import uvloop

    receive_timeout = float(os.environ.get("BENCH_RECV_TIMEOUT", "120"))
    sockets: dict[str, Any] = {}

    async def open_one(session: Any, sem: asyncio.Semaphore, user: str) -> None:
        async with sem:
            for _ in range(20):
                try:
                    ws = await session.ws_connect(
                        f"{url}?token={make_token(user, SECRET)}", heartbeat=None
                    )
                    first = json.loads((await ws.receive()).data)
                    assert first["type"] == "connected", first
                    sockets[user] = ws
                    return
                except (aiohttp.ClientError, OSError):
                    await asyncio.sleep(0.2)

    async def drain(user: str, expected: int) -> int:
        """Receive queued batches, acking each, until ``expected`` distinct messages."""
        ws = sockets[user]
        got: set[str] = set()
        while len(got) < expected:
            frame = json.loads((await ws.receive(timeout=receive_timeout)).data)
            if frame.get("type") == "queued_messages":
                got.update(m["id"] for m in frame["messages"])
                await ws.send_str(json.dumps({"type": "ack_queued", "upTo": frame["cursor"]}))
        return len(got)

    async def run() -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, commands.get)
            op = command["op"]
            if op == "open":
                sem = asyncio.Semaphore(200)
                await asyncio.gather(*(open_one(session, sem, u) for u in users))
                events.put(("opened", len(sockets)))
            elif op == "close":
                await asyncio.gather(*(ws.close() for ws in sockets.values()))
                sockets.clear()
                events.put(("closed", 0))
            elif op == "drain":
                start = time.monotonic()
                counts = await asyncio.gather(*(drain(u, command["per_user"]) for u in users))
                events.put(("drained", sum(counts), time.monotonic() - start))
            elif op == "stop":
                await session.close()
                events.put(("stopped", 0))
                return

    uvloop.run(run())


class Clients:
    def __init__(self, url: str, users: list[str]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.events = ctx.Queue()
        self.queues = []
        self.procs = []
        for i in range(WORKERS):
            q = ctx.Queue()
            p = ctx.Process(target=_worker, args=(url, users[i::WORKERS], q, self.events))
            p.start()
            self.queues.append(q)
            self.procs.append(p)

    def command(self, op: str, **args: Any) -> list[tuple[Any, ...]]:
        for q in self.queues:
            q.put({"op": op, **args})
        return [self.events.get(timeout=600) for _ in self.queues]

    def stop(self) -> None:
        self.command("stop")
        for p in self.procs:
            p.join(10)


def progress(message: str) -> None:
    sys.stderr.write(f"[lifecycle] {message}\n")
    sys.stderr.flush()


def _wait(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(interval)
    return time.monotonic() - start


def _online(client: redis.Redis, users: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.exists(keys.user_connections_key(u))
    return sum(pipe.execute())


def presence(args: argparse.Namespace, stack: Stack, client: redis.Redis) -> dict[str, Any]:
    gateway = stack.start("gateway", CHAT_GATEWAY_TTL_SECONDS="5")
    stack.start("presence", CHAT_GATEWAY_TTL_SECONDS="5")
    users = [f"p{i}" for i in range(args.users)]
    clients = Clients(gateway.ws_url, users)
    start = time.monotonic()
    clients.command("open")
    _wait(lambda: _online(client, users) == len(users), 120)
    online_time = time.monotonic() - start
    start = time.monotonic()
    clients.command("close")
    _wait(lambda: _online(client, users) == 0, 120)
    offline_time = time.monotonic() - start
    clients.stop()

    # The killed gateway: many users, one SIGKILL.
    victim = stack.start("gateway", CHAT_GATEWAY_TTL_SECONDS="5")
    doomed = [f"k{i}" for i in range(args.killed)]
    clients = Clients(victim.ws_url, doomed)
    opened = sum(e[1] for e in clients.command("open"))
    progress(f"{opened} of {len(doomed)} connected to the doomed gateway")
    _wait(lambda: _online(client, doomed) >= opened, 300, interval=0.5)
    victim.kill9()
    killed = time.monotonic()
    _wait(lambda: _online(client, doomed) == 0, 120, interval=0.1)
    offline_after_kill = time.monotonic() - killed
    for p in clients.procs:
        p.kill()
    return {
        "users": len(users),
        "online_transitions_per_s": round(len(users) / online_time, 1),
        "offline_transitions_per_s": round(len(users) / offline_time, 1),
        "killed_gateway_users": opened,
        "gateway_ttl_s": 5,
        "all_offline_after_kill_s": round(offline_after_kill, 2),
        "note": "connect time includes WebSocket handshakes through the gateway",
    }


def storm(args: argparse.Namespace, stack: Stack, client: redis.Redis) -> dict[str, Any]:
    import aiohttp

    services = stack.start_all()
    gateway = services["gateway"]
    users = [f"s{i}" for i in range(args.users)]
    group = 10
    sender = "storm-sender"

    async def fill() -> float:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{gateway.ws_url}?token={make_token(sender, SECRET)}")
            await ws.receive()
            conversations = []
            for i in range(0, len(users), group):
                await ws.send_str(json.dumps({
                    "type": "create_conversation", "participantIds": users[i : i + group],
                }))  # fmt: skip
                while True:
                    frame = json.loads((await ws.receive()).data)
                    if frame["type"] == "conversation":
                        conversations.append(frame["conversation"]["id"])
                        break
            start = time.monotonic()
            total = len(conversations) * args.queued
            for n in range(args.queued):
                for cid in conversations:
                    await ws.send_str(json.dumps(
                        {"type": "send_message", "conversationId": cid, "content": f"q{n}"}
                    ))  # fmt: skip
            acked = errors = 0
            while acked + errors < total:
                frame = json.loads((await ws.receive(timeout=60)).data)
                acked += frame["type"] == "message_ack"
                errors += frame["type"] == "error"
            if errors:
                raise RuntimeError(f"{errors} sends refused while filling the queues")
            await ws.close()
            return time.monotonic() - start

    progress("filling offline queues")
    fill_seconds = asyncio.run(fill())
    progress(f"filled in {fill_seconds:.1f}s; waiting for queue depth")
    queued = args.users * args.queued
    _wait(lambda: int(client.get(keys.offline_depth_key()) or 0) >= queued, 120)
    pids = {s.service: s.pid for s in services.values()}
    pids["redis"] = stack.redis_pid  # type: ignore[attr-defined]
    peaks = dict.fromkeys(pids, 0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                peaks[name] = max(peaks[name], procstat.rss_bytes(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = Clients(gateway.ws_url, users)
    progress("reconnecting everyone")
    start = time.monotonic()
    clients.command("open")
    progress("connected; draining")
    results = clients.command("drain", per_user=args.queued)
    elapsed = time.monotonic() - start
    stop.set()
    sampler.join()
    clients.stop()
    delivered = sum(r[1] for r in results)
    return {
        "users": args.users,
        "queued_per_user": args.queued,
        "queued_total": queued,
        "fill_seconds": round(fill_seconds, 1),
        "delivered_and_acked": delivered,
        "storm_seconds": round(elapsed, 2),
        "messages_per_s": round(delivered / elapsed, 1),
        "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in peaks.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["presence", "storm"])
    parser.add_argument("--users", type=int)
    parser.add_argument("--killed", type=int, default=10_000)
    parser.add_argument("--queued", type=int, default=20)
    parser.add_argument("--persist", action="store_true", help="storm: fill through MongoDB")
    args = parser.parse_args()
    args.users = args.users or (2000 if args.which == "presence" else 5000)
    procstat.raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    redis_server = RedisServer(work / "redis")
    mongo = FerretDB(work / "ferretdb")
    redis_server.start()
    mongo.start()
    # The storm measures the queue path (Redis); filling 100k queue entries
    # through FerretDB's SQLite backend would dominate the run, so the fill
    # runs with persistence off unless --persist is given.
    persist = "1" if args.which == "presence" or args.persist else "0"
    stack = Stack(
        redis_server.url, mongo.uri, work / "stack",
        CHAT_RATE_LIMITS="off", CHAT_LOG_LEVEL="WARNING", CHAT_MAX_CONNECTIONS_PER_USER="100",
        CHAT_PERSISTENCE=persist,
    )  # fmt: skip
    stack.redis_pid = redis_server.pid  # type: ignore[attr-defined]
    client = redis.Redis.from_url(stack.redis_url)
    try:
        result = (
            presence(args, stack, client)
            if args.which == "presence"
            else storm(args, stack, client)
        )
    finally:
        stack.stop()
        mongo.stop()
        redis_server.stop()
    result["machine"] = {"cpus": os.cpu_count()}
    result["persistence"] = persist == "1"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"lifecycle-{args.which}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
