"""Load generator: worker processes holding the client connections.

The coordinator (``Pool``) talks to each worker over a pipe; every command is
answered once. Each worker owns whole rooms (all members of a conversation
live in the same worker), so it knows how many deliveries it must see for
what it sent, and measures latency with one clock. Workers are pinned to the
load generator's CPUs and report their own CPU time for every step, so a
result can show the load generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from bench import procstat


def worker_main(conn: Connection, index: int, cpus: list[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    procstat.raise_nofile()
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(conn, index)
    try:
        loop.run_until_complete(worker.serve())
    finally:
        loop.close()


class Worker:
    def __init__(self, conn: Connection, index: int) -> None:
        from bench.clients import Counters

        self.conn = conn
        self.index = index
        self.counters = Counters()
        self.clients: dict[int, Any] = {}
        self.rooms: dict[str, str] = {}  # room name -> id to send to
        self.secret = ""

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(self.conn.fileno(), lambda: inbox.put_nowait(self.conn.recv()))
        # add_reader made the pipe non-blocking; answers (latency arrays) can be
        # larger than the pipe buffer, so writes must block until read.
        os.set_blocking(self.conn.fileno(), True)
        while True:
            command = await inbox.get()
            op = command.pop("op")
            if op == "exit":
                await self.close_all()
                self.conn.send({"ok": True})
                return
            try:
                result = await getattr(self, f"op_{op}")(**command)
                self.conn.send({"ok": True, **result})
            except Exception as exc:
                self.conn.send({"ok": False, "error": f"{exc!r}\n{traceback.format_exc()}"})

    # --- commands ------------------------------------------------------------------

    async def op_ready(self) -> dict[str, Any]:
        """Answered once the client modules are imported (not in the first step's time)."""
        import bench.clients  # noqa: F401
        import shared.tokens  # noqa: F401

        return {}

    async def op_connect(
        self,
        protocol: str,
        url: str,
        users: list[tuple[int, str]],
        secret: str,
        concurrency: int = 100,
        ttl: float = 3 * 3600,
    ) -> dict[str, Any]:
        from bench.clients import connect
        from shared.tokens import make_token

        started = time.monotonic()
        cpu = time.process_time()
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one(uid: int, user: str) -> None:
            token = make_token(user, secret, name=user, ttl_seconds=ttl)
            async with gate:
                for attempt in range(3):
                    try:
                        client = await connect(protocol, url, uid, user, token, self.counters)
                        self.clients[uid] = client
                        return
                    except Exception as exc:
                        if attempt == 2:
                            failures.append(f"{user}: {exc!r}")
                        else:
                            await asyncio.sleep(0.5 * (attempt + 1))

        await asyncio.gather(*(one(uid, user) for uid, user in users))
        return {
            "connected": len(users) - len(failures),
            "failed": len(failures),
            "failures": failures[:5],
            "seconds": time.monotonic() - started,
            "cpu": time.process_time() - cpu,
        }

    async def op_rooms(
        self, rooms: list[tuple[str, list[int]]], create: bool, concurrency: int = 50
    ) -> dict[str, Any]:
        """Join every member to its room (or have the first member create it)."""
        gate = asyncio.Semaphore(concurrency)
        ids: dict[str, str] = {}

        async def one(name: str, members: list[int]) -> None:
            async with gate:
                if create:
                    first = self.clients[members[0]]
                    others = [self.clients[m].user for m in members[1:]]
                    ids[name] = await first.join(name, others)
                else:
                    results = await asyncio.gather(
                        *(self.clients[m].join(name, None) for m in members)
                    )
                    ids[name] = results[0]

        started = time.monotonic()
        await asyncio.gather(*(one(name, members) for name, members in rooms))
        self.rooms.update(ids)
        # Let pushes about the new rooms (chat `conversation`) arrive and pass.
        await asyncio.sleep(0.2)
        return {"rooms": len(ids), "seconds": time.monotonic() - started}

    async def op_load(
        self,
        step: int,
        rate: float,
        duration: float,
        senders: list[tuple[int, str, int]],
        grace: float,
        pad: int = 100,
    ) -> dict[str, Any]:
        """Send ``rate`` messages/s for ``duration`` s, round robin over ``senders``.

        ``senders`` is (uid, room name, deliveries expected per message). Then
        wait up to ``grace`` s for every expected delivery and ack.
        """
        counters = self.counters
        counters.reset(step)
        cpu0 = time.process_time()
        plan = [(self.clients[uid], self.rooms[room], fanout) for uid, room, fanout in senders]
        n = 0
        expected = 0
        index = 0
        lag_max = 0.0
        t0 = time.monotonic()
        tick = 0.002
        while True:
            now = time.monotonic()
            elapsed = now - t0
            if elapsed >= duration:
                break
            due = int(elapsed * rate) - n
            if due > 0:
                lag_max = max(lag_max, due / rate)
                for _ in range(due):
                    client, room, fanout = plan[index]
                    index = index + 1 if index + 1 < len(plan) else 0
                    client.send_message(room, step, pad)
                    expected += fanout
                n += due
            await asyncio.sleep(tick)
        send_seconds = time.monotonic() - t0
        cpu_send = time.process_time() - cpu0
        end = time.monotonic()
        while time.monotonic() - end < grace:
            if counters.delivered >= expected and counters.acks >= n:
                break
            await asyncio.sleep(0.005)
        wall = time.monotonic() - t0
        return {
            "step": step,
            "sent": n,
            "expected": expected,
            "delivered": counters.delivered,
            "acks": counters.acks,
            "echoes": counters.echoes,
            "stale": counters.stale,
            "errors": counters.errors,
            "error_sample": list(counters.error_sample),
            "disconnects": counters.disconnects,
            "latencies": counters.latencies.tobytes(),
            "ack_latencies": counters.ack_latencies.tobytes(),
            "send_seconds": send_seconds,
            "wall": wall,
            "span": (counters.last_delivery - t0) if counters.last_delivery else 0.0,
            "cpu": time.process_time() - cpu0,
            "cpu_send": cpu_send,
            "send_lag_max": lag_max,
        }

    async def op_close(self, uids: list[int] | None = None) -> dict[str, Any]:
        started = time.monotonic()
        targets = list(self.clients) if uids is None else uids
        closing = []
        for uid in targets:
            client = self.clients.pop(uid, None)
            if client is not None:
                client.close()
                closing.append(client.closed)
        if closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 30)
        self.counters.disconnects = 0
        return {"closed": len(closing), "seconds": time.monotonic() - started}

    async def op_idle(self, seconds: float) -> dict[str, Any]:
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        return {"cpu": time.process_time() - cpu0, "open": len(self.clients)}

    async def close_all(self) -> None:
        await self.op_close()


class Pool:
    """The coordinator's handle on the worker processes."""

    def __init__(self, workers: int, cpus: set[int] | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        cpu_list = sorted(cpus) if cpus else None
        # A spawned worker imports the coordinator's main module before its
        # target runs (and pins it): started on the load generator's CPUs, that
        # start-up cannot land on the servers' cores during the first step.
        with procstat.spawning_on(cpus):
            for index in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main, args=(child, index, cpu_list), name=f"loadgen-{index}"
                )
                proc.start()
                child.close()
                self.pipes.append(parent)
                self.procs.append(proc)
        # Ready before the first measured step: imports done, nothing left to start.
        self.call([{"op": "ready"}] * workers, timeout=120)

    @property
    def size(self) -> int:
        return len(self.pipes)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def call(self, commands: list[dict[str, Any]], timeout: float = 300) -> list[dict[str, Any]]:
        """Send one command to each worker (None: skip) and gather the answers."""
        active = []
        for pipe, command in zip(self.pipes, commands, strict=True):
            if command is not None:
                pipe.send(command)
                active.append(pipe)
        results = []
        deadline = time.monotonic() + timeout
        for pipe in active:
            if not pipe.poll(max(deadline - time.monotonic(), 0.01)):
                raise TimeoutError("load generator worker did not answer")
            result = pipe.recv()
            if not result.get("ok"):
                raise RuntimeError(f"load generator worker failed: {result.get('error')}")
            results.append(result)
        return results

    def broadcast(self, command: dict[str, Any], timeout: float = 300) -> list[dict[str, Any]]:
        return self.call([dict(command) for _ in self.pipes], timeout)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send({"op": "exit"})
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                if pipe.poll(15):
                    pipe.recv()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
