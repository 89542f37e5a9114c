"""The scenarios, run against one started system with one load generator pool.

(c) idle       N connections to the one connection-holding process: RSS per connection
(a) fan-out    C clients in rooms of 10; a fixed message rate
(b) one-to-one pairs of clients; a fixed rate; end-to-end latency percentiles
(d) ramp       the fan-out topology at rising rates: the highest sustainable rate
               (every delivery made, no backlog) and the highest with p99 <= 100 ms
"""

from __future__ import annotations

import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import procstat
from bench.loadgen import Pool
from bench.systems import System
from tests.support.stack import SECRET

P99_LIMIT_MS = 100.0
SUSTAINED_P99_MS = 1000.0  # a step whose p99 passes this is a backlog, not a rate
LOADGEN_BUSY = 0.85  # share of the load generator's CPUs (while sending) that may make it the limit


# msg/s; x9 deliveries in rooms of 10. The top steps are above what one core
# of any system here delivers, so every ramp ends at its system's limit. The
# steps are about 1.2x apart from 1,500 up, where the systems here pass p99
# 100 ms (the saturation figure is the last step under it): on a slower
# machine between 1,500 and 3,300, on a faster one (twice as fast) between
# 4,000 and 13,000, where steps 1.5x apart made a ratio between two systems
# read 1.5x or 2.25x by which side of a step each fell. Below 1,500 the
# fixed-rate scenarios measure, so the low end is sparse.
# 5556 msg/s in rooms of 10 is 50,004 deliveries/s: the step at which issue #8
# sets its latency target (p99 under 20 ms), measured rather than read between
# the 5000 and 6000 steps.
RAMP_RATES = (
    *(50, 200, 300, 450, 700, 1000, 1500, 1800, 2200, 2700, 3300, 4000),
    *(5000, 5556, 6000, 7500, 9000, 11000, 13000, 16000),
)


@dataclass
class Sizes:
    clients: int = 1000
    room_size: int = 10
    fixed_rate: float = 50.0  # messages/s in the fan-out rooms (450 deliveries/s)
    fixed_seconds: float = 4.0
    fixed_rounds: int = 3  # every system in turn, this many times (bench.paired)
    quiet_seconds: float = 2.0  # after its step, at most this long back to background CPU
    pairs: int = 500
    one2one_rate: float = 50.0
    one2one_seconds: float = 4.0  # per step; fixed_rounds steps each (bench.paired)
    idle: int = 10_000
    idle_seconds: float = 3.0
    ramp_rates: list[float] = field(default_factory=lambda: list(RAMP_RATES))
    ramp_seconds: float = 2.5
    grace: float = 2.0
    warmup_seconds: float = 1.0
    pad: int = 100  # message content length


FULL = Sizes()
QUICK = Sizes(
    clients=200,
    fixed_rate=50,
    fixed_seconds=3,
    fixed_rounds=2,
    pairs=100,
    one2one_rate=50,
    one2one_seconds=2,
    idle=1000,
    idle_seconds=2,
    ramp_rates=[50, 200, 1000, 3000],
    ramp_seconds=2,
    grace=1.5,
    warmup_seconds=1,
)


def percentiles(values: list[int] | array[int], points: tuple[float, ...]) -> dict[str, float]:
    """Nearest-rank percentiles of microsecond samples, in milliseconds."""
    if not values:
        return {f"p{p:g}": float("nan") for p in points}
    ordered = sorted(values)
    n = len(ordered)
    out = {}
    for p in points:
        rank = min(n - 1, max(0, round(p / 100 * n + 0.5) - 1))
        out[f"p{p:g}"] = round(ordered[rank] / 1000, 3)
    return out


LAT_POINTS = (50.0, 90.0, 99.0, 99.9)
ACK_POINTS = (50.0, 99.0)


class Runner:
    def __init__(
        self, system: System, pool: Pool, sizes: Sizes, loadgen_cpus: int, log: Any
    ) -> None:
        self.system = system
        self.pool = pool
        self.sizes = sizes
        self.loadgen_cpus = max(loadgen_cpus, 1)
        self.log = log
        self.step = 0
        # The latency samples (send to delivery, send to ack; µs) of the last step.
        self.last_samples: tuple[array[int], array[int]] = (array("q"), array("q"))

    # --- helpers ------------------------------------------------------------------

    def _split(self, items: list[Any], key: Any = None) -> list[list[Any]]:
        buckets: list[list[Any]] = [[] for _ in range(self.pool.size)]
        for index, item in enumerate(items):
            buckets[(key(item) if key else index) % self.pool.size].append(item)
        return buckets

    def connect(self, users: list[tuple[int, str]], concurrency: int = 100) -> dict[str, Any]:
        per_worker = self._split(users, key=lambda u: u[0] // self.sizes.room_size)
        results = self.pool.call(
            [
                {
                    "op": "connect",
                    "protocol": self.system.protocol,
                    "url": self.system.ws_url(),
                    "users": chunk,
                    "secret": SECRET,
                    "concurrency": concurrency,
                }
                if chunk
                else None
                for chunk in per_worker
            ],
            timeout=600,
        )
        connected = sum(r["connected"] for r in results)
        failed = sum(r["failed"] for r in results)
        failures = [f for r in results for f in r["failures"]][:5]
        seconds = max(r["seconds"] for r in results)
        if failed:
            self.log(f"  {failed} connections failed, e.g. {failures[:2]}")
        return {"connected": connected, "failed": failed, "seconds": round(seconds, 2)}

    def rooms(self, rooms: list[tuple[str, list[int]]]) -> None:
        create = self.system.protocol == "chat"
        per_worker = self._split(rooms, key=lambda r: r[1][0] // self.sizes.room_size)
        self.pool.call(
            [
                {"op": "rooms", "rooms": chunk, "create": create} if chunk else None
                for chunk in per_worker
            ],
            timeout=600,
        )

    def load(
        self,
        rate: float,
        seconds: float,
        senders: list[tuple[int, str, int]],
        label: str,
    ) -> dict[str, Any]:
        """One open-loop step; every worker sends its share of ``rate``."""
        self.step += 1
        per_worker = self._split(senders, key=lambda s: s[0] // self.sizes.room_size)
        busy = [chunk for chunk in per_worker if chunk]
        pids = self.system.pids()
        before = procstat.snapshot(pids)
        started = time.monotonic()
        results = self.pool.call(
            [
                {
                    "op": "load",
                    "step": self.step,
                    "rate": rate * len(chunk) / len(senders),
                    "duration": seconds,
                    "senders": chunk,
                    "grace": self.sizes.grace,
                    "pad": self.sizes.pad,
                }
                if chunk
                else None
                for chunk in per_worker
            ],
            timeout=seconds + self.sizes.grace + 120,
        )
        wall = time.monotonic() - started
        after = procstat.snapshot(pids)
        assert busy
        return self._summarise(label, rate, seconds, results, before, after, wall)

    def _summarise(
        self,
        label: str,
        rate: float,
        seconds: float,
        results: list[dict[str, Any]],
        before: procstat.Snapshot,
        after: procstat.Snapshot,
        wall: float,
    ) -> dict[str, Any]:
        latencies: array[int] = array("q")
        ack_latencies: array[int] = array("q")
        for r in results:
            latencies.frombytes(r["latencies"])
            ack_latencies.frombytes(r["ack_latencies"])
        sent = sum(r["sent"] for r in results)
        expected = sum(r["expected"] for r in results)
        delivered = sum(r["delivered"] for r in results)
        acks = sum(r["acks"] for r in results)
        span = max(r["span"] for r in results) or wall
        send_seconds = max(r["send_seconds"] for r in results)
        server_cpu = procstat.cpu_delta(before, after)
        total_cpu = sum(server_cpu.values())
        loadgen_cpu = sum(r["cpu"] for r in results)
        lat = percentiles(latencies, LAT_POINTS)
        drain = max(span - send_seconds, 0.0)
        complete = delivered >= 0.99 * expected if expected else False
        sustained = complete and drain <= 1.0 and lat["p99"] <= SUSTAINED_P99_MS
        loadgen_share = loadgen_cpu / (wall * self.loadgen_cpus)
        # While sending, the load generator both sends and receives: its busiest time.
        send_cpu = sum(r["cpu_send"] for r in results)
        loadgen_send_share = send_cpu / (send_seconds * self.loadgen_cpus) if send_seconds else 0.0
        summary = {
            "label": label,
            "offered_rate": rate,
            "seconds": seconds,
            "sent": sent,
            "expected": expected,
            "delivered": delivered,
            "acks": acks,
            "errors": sum(r["errors"] for r in results),
            "error_sample": [e for r in results for e in r["error_sample"]][:3],
            "disconnects": sum(r["disconnects"] for r in results),
            "stale": sum(r["stale"] for r in results),
            "deliveries_per_s": round(delivered / span, 1) if span else 0.0,
            "sends_per_s": round(sent / send_seconds, 1) if send_seconds else 0.0,
            "latency_ms": lat,
            "ack_latency_ms": percentiles(ack_latencies, ACK_POINTS),
            "drain_seconds": round(drain, 3),
            "complete": complete,
            "sustained": sustained,
            "server_cpu": server_cpu,
            "server_cpu_total": round(total_cpu, 3),
            "server_cpu_util": round(total_cpu / wall, 3),
            "cpu_per_1k_deliveries": round(total_cpu / delivered * 1000, 4) if delivered else None,
            "server_rss": after.rss,
            "server_rss_total": after.total_rss,
            "loadgen_cpu": round(loadgen_cpu, 3),
            "loadgen_cpu_share": round(loadgen_share, 3),
            "loadgen_send_share": round(loadgen_send_share, 3),
            "loadgen_busy": loadgen_send_share >= LOADGEN_BUSY,
            "send_lag_max_s": round(max(r["send_lag_max"] for r in results), 4),
            "wall": round(wall, 3),
        }
        self.last_samples = (latencies, ack_latencies)
        errors = summary["errors"]
        self.log(
            f"  {label}: {sent} sent, {delivered}/{expected} delivered, "
            f"{summary['deliveries_per_s']:.0f}/s, p50 {lat['p50']} p99 {lat['p99']} "
            f"p99.9 {lat['p99.9']} ms, server CPU {total_cpu:.2f}s "
            f"({summary['cpu_per_1k_deliveries']} s/1k), "
            f"loadgen {loadgen_send_share:.0%} (sending) {loadgen_share:.0%} (step)"
            + (f", {summary['errors']} errors: {summary['error_sample'][:1]}" if errors else "")
        )
        return summary

    # --- scenarios ---------------------------------------------------------------

    def idle(self) -> dict[str, Any]:
        n = self.sizes.idle
        pids = self.system.pids()
        main = self.system.main_process()
        time.sleep(1.0)
        before = procstat.snapshot(pids)
        users = [(uid, f"idle-{uid}") for uid in range(n)]
        started = time.monotonic()
        conn = self.connect(users, concurrency=200)
        connect_seconds = time.monotonic() - started
        # Work the connects left behind (presence recording users in the
        # store) belongs to the connect phase: idle is measured once it is done.
        settled, settle_seconds = _settle(pids)
        idle_results = self.pool.broadcast({"op": "idle", "seconds": self.sizes.idle_seconds})
        after = procstat.snapshot(pids)
        connected = conn["connected"]
        idle_cpu_by = procstat.cpu_delta(settled, after)
        idle_cpu = sum(idle_cpu_by.values())
        result = {
            "connections": connected,
            "requested": n,
            "failed": conn["failed"],
            "connect_seconds": round(connect_seconds, 2),
            "connects_per_s": round(connected / connect_seconds, 1) if connect_seconds else None,
            "connect_cpu": procstat.cpu_delta(before, settled),
            "settle_seconds": round(settle_seconds, 1),
            "main_process": main,
            "main_rss_before": before.rss[main],
            "main_rss_after": after.rss[main],
            "rss_before": before.rss,
            "rss_after": after.rss,
            "main_rss_per_conn": round((after.rss[main] - before.rss[main]) / max(connected, 1)),
            "total_rss_per_conn": round((after.total_rss - before.total_rss) / max(connected, 1)),
            "idle_cpu_s": round(idle_cpu, 3),
            "idle_cpu": idle_cpu_by,
            "idle_seconds": self.sizes.idle_seconds,
            "loadgen_idle_cpu": round(sum(r["cpu"] for r in idle_results), 3),
        }
        self.log(
            f"  idle: {connected}/{n} connections in {connect_seconds:.1f}s; "
            f"{result['main_rss_per_conn'] / 1024:.1f} KiB/conn in {main}, "
            f"{result['total_rss_per_conn'] / 1024:.1f} KiB/conn all processes; "
            f"idle CPU {idle_cpu:.2f}s over {self.sizes.idle_seconds}s "
            f"(after {settle_seconds:.1f}s for the connect backlog to drain)"
        )
        closed = self.pool.broadcast({"op": "close"}, timeout=120)
        self.log(f"  closed {sum(r['closed'] for r in closed)} idle connections")
        time.sleep(1.0)
        return result

    def setup_chat_topology(self) -> dict[str, Any]:
        s = self.sizes
        users = [(uid, f"u{uid}") for uid in range(s.clients)]
        started = time.monotonic()
        conn = self.connect(users)
        groups = s.clients // s.room_size
        rooms = [
            (f"r{g}", list(range(g * s.room_size, (g + 1) * s.room_size))) for g in range(groups)
        ]
        self.rooms(rooms)
        pairs = [(f"p{k}", [2 * k, 2 * k + 1]) for k in range(min(s.pairs, s.clients // 2))]
        self.rooms(pairs)
        self.fanout_senders = [
            (members[m], name, len(members) - 1)
            for m in range(s.room_size)
            for name, members in rooms
        ]
        self.pair_senders = [(members[m], name, 1) for m in range(2) for name, members in pairs]
        setup = {
            "clients": conn["connected"],
            "failed": conn["failed"],
            "rooms": len(rooms),
            "pairs": len(pairs),
            "seconds": round(time.monotonic() - started, 2),
        }
        self.log(
            f"  setup: {conn['connected']} clients, {len(rooms)} rooms of {s.room_size}, "
            f"{len(pairs)} pairs in {setup['seconds']}s"
        )
        return setup

    def warmup(self) -> None:
        rate = min(self.sizes.fixed_rate, 100)
        self.load(rate, self.sizes.warmup_seconds, self.fanout_senders, "warmup")

    def ramp(self) -> dict[str, Any]:
        steps = []
        for rate in self.sizes.ramp_rates:
            step = self.load(rate, self.sizes.ramp_seconds, self.fanout_senders, f"ramp {rate:g}/s")
            steps.append(step)
            if not step["sustained"] or step["latency_ms"]["p99"] > 1000 or step["loadgen_busy"]:
                break
        sustained = [s for s in steps if s["sustained"]]
        fast = [s for s in sustained if s["latency_ms"]["p99"] <= P99_LIMIT_MS]
        best = max(sustained, key=lambda s: s["deliveries_per_s"], default=None)
        best_fast = max(fast, key=lambda s: s["deliveries_per_s"], default=None)
        last = steps[-1] if steps else None
        return {
            "steps": steps,
            "max_sustained": _brief(best),
            "max_p99_under_100ms": _brief(best_fast),
            "stopped_by": _stop_reason(last),
            "limited_by_loadgen": bool(last and last["loadgen_busy"] and last["sustained"]),
        }


def _stop_reason(last: dict[str, Any] | None) -> str | None:
    if last is None:
        return None
    if last["loadgen_busy"]:
        return "load generator busy"
    if last["latency_ms"]["p99"] > SUSTAINED_P99_MS:
        return "p99 over 1 s"
    if not last["sustained"]:
        return "deliveries missing / backlog"
    return "end of ramp"


def _brief(step: dict[str, Any] | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {
        "offered_rate": step["offered_rate"],
        "deliveries_per_s": step["deliveries_per_s"],
        "latency_ms": step["latency_ms"],
        "cpu_per_1k_deliveries": step["cpu_per_1k_deliveries"],
        "server_cpu_util": step["server_cpu_util"],
        "loadgen_cpu_share": step["loadgen_cpu_share"],
        "loadgen_send_share": step.get("loadgen_send_share"),
    }


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)


def _settle(
    pids: dict[str, int], window: float = 1.0, busy: float = 0.15, limit: float = 120.0
) -> tuple[procstat.Snapshot, float]:
    """Wait (at least 2 s, at most ``limit``) until the servers use under ``busy`` of a core.

    Above what idle sockets cost on their own (heartbeats of 10,000
    connections take a few percent of a core), below any backlog.
    """
    started = time.monotonic()
    time.sleep(2.0)
    last = procstat.snapshot(pids)
    while time.monotonic() - started < limit:
        time.sleep(window)
        now = procstat.snapshot(pids)
        if sum(procstat.cpu_delta(last, now).values()) < busy * window:
            return now, time.monotonic() - started
        last = now
    return last, time.monotonic() - started
