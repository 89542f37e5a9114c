"""Render docs/benchmarks.md and docs/benchmarks.png from a results file."""

from __future__ import annotations

import glob
import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.paired import round_ratios
from bench.systems import ROOT

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
BASE = "chat"
NOPERSIST = "chat-nopersist"
# Issue #8's targets.
TARGET_DELIVERIES = 50_000  # deliveries/s at which p99 must stay under TARGET_P99_MS
TARGET_P99_MS = 20.0
TARGET_IDLE_KIB = 16.0

WORK_NOTES = {
    "chat": (
        "Per message: the gateway validates the frame and XADDs it to a command stream "
        "partition (rate limits are off in the bench: it sends far above the product's "
        "per-user limits); the delivery service (partition leases, one consumer-group "
        "read for all its partitions) checks membership, assigns a gapless seq, **inserts the "
        "batch's messages into MongoDB (FerretDB) before acking**, then one Redis pipeline "
        "carries the conversation's head (last seq) move, a PUBLISH per member "
        "(user channels; one `fanout_keep.lua` call per message on standalone Redis, which "
        "also queues the message for members no gateway received it for; the `message_ack` "
        "rides on the push to the sender's own channel), the recent-history cache update "
        "and one domain event per batch, in the same write as the next read; "
        "the batch's XACK once its replies are in, with the read after that. "
        "The gateway frames each "
        "push once and writes the same bytes to every device's socket. Presence (connection "
        "events, lastSeen in MongoDB) and metrics (stream consumer, gauges) run too. Every "
        "connection subscribes its user channel and writes a connection event."
    ),
    "chat-nopersist": (
        "As above without the MongoDB writes per batch (`CHAT_PERSISTENCE=off`): the partition's "
        "owner numbers messages in memory, as with persistence on, and the conversation's head "
        "in Redis, moved in the batch's own pipeline, is its counter; streams, partitions, "
        "acks, offline queues, presence unchanged."
    ),
    "centrifugo": (
        "Per publication: a Redis Lua script appends to the channel's history stream (we "
        "enabled history 100 / 5 min and `force_recovery`, so each publication gets an offset, "
        "Centrifugo's analogue of a seq) and PUBLISHes it; the node delivers it to every "
        "subscriber **including the publisher** and replies to the publish command. Nothing "
        "durable beyond the Redis history; no per-user channels, no offline queue (clients "
        "recover from history on resubscribe); publish permission = channel subscription."
    ),
    "socketio": (
        "Per message: the event handler checks room membership, broadcasts to the room's local "
        "sockets in-process and SPUBLISHes the packet to Redis for other nodes (none here), "
        "then calls the ack. **No storage, no seq, no offline delivery, no per-message Redis "
        "round trip on the delivery path.**"
    ),
    "python-socketio": (
        "Per message: the handler checks room membership and emits through "
        "`AsyncRedisManager`: the packet is PUBLISHed to Redis and this same process's "
        "listener receives it back and writes it to the room's sockets; then the ack. "
        "**No storage, no seq, no offline delivery.**"
    ),
}


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}{unit}"
        return f"{value:.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _ratio(value: Any, base: Any) -> str:
    if value is None or base in (None, 0) or value == 0:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "-"
    r = value / base
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def _lat(step: dict[str, Any] | None, key: str) -> Any:
    if not step:
        return None
    return step.get("latency_ms", {}).get(key)


def _sustained(step: dict[str, Any]) -> bool:
    """All deliveries in, the last within 1 s after sending stopped, p99 under 1 s."""
    return bool(
        step["complete"] and step["drain_seconds"] <= 1.0 and step["latency_ms"]["p99"] <= 1000
    )


def _ramp_best(ramp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(max sustained step, max step with p99 <= 100 ms), recomputed from the steps."""
    ok = [s for s in ramp.get("steps", []) if _sustained(s)]
    fast = [s for s in ok if s["latency_ms"]["p99"] <= 100]
    best = max(ok, key=lambda s: s["deliveries_per_s"], default={})
    best_fast = max(fast, key=lambda s: s["deliveries_per_s"], default={})
    return best, best_fast


def _systems(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(results["systems"].items())


def _label(entry: dict[str, Any]) -> str:
    return str(entry["system"]["label"])


def _latest_profiles() -> list[dict[str, Any]]:
    """The newest profile of each system (chat, chat-nopersist)."""
    found = []
    for system in ("chat", "chat-nopersist"):
        files = sorted(glob.glob(str(ROOT / "bench" / "results" / f"profile-{system}-2*.json")))
        if files:
            found.append(dict(json.loads(Path(files[-1]).read_text()), file=Path(files[-1]).name))
    return found


def render(results: dict[str, Any], doc: Path = DOC, chart: Path = CHART) -> None:
    chart_ok = _chart(results, chart)
    doc.write_text(_markdown(results, chart.name if chart_ok else None))


# --- markdown --------------------------------------------------------------------------------


def _markdown(results: dict[str, Any], chart_name: str | None) -> str:
    m = results["machine"]
    sizes = results["sizes"]
    pin = results["pinning"]
    systems = _systems(results)
    base = results["systems"].get(BASE, {})
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks: this project side by side with its peers")
    add("")
    add(
        "<!-- Generated by `python -m bench` (bench/report.py) from "
        f"bench/results/run-{results['started']}….json; re-render with "
        "`python -m bench --report FILE`. -->"
    )
    add("")
    add(
        "The same chat workload on this project and on the peers a team would otherwise pick: "
        "**Centrifugo v6** (Go, Redis engine), **Socket.IO 4** (Node.js, Redis adapter) and "
        "**python-socketio 5** (aiohttp, `AsyncRedisManager`). Rooms/channels stand in for "
        "conversations. Each system runs on 127.0.0.1 with a fresh redis-server of its own "
        "(and, for this project, FerretDB and its four services)."
    )
    add("")
    add("## How to run")
    add("")
    add("```sh")
    add("make bench                                   # = uv run python -m bench (full, ~10 min)")
    add("uv run python -m bench --quick               # smoke run, small sizes (~3 min)")
    add("uv run python -m bench --systems chat,centrifugo --scenarios fanout,ramp")
    add("uv run python -m bench --idle 20000          # more idle connections")
    add("uv run python -m bench --profile             # py-spy on gateway + delivery under fan-out")
    add("uv run python -m bench --report bench/results/run-….json   # re-render this page")
    add("```")
    add("")
    add(
        "`bench/install_peers.sh` (run by the bench when something is missing) installs "
        "Centrifugo with `go install github.com/centrifugal/centrifugo/v6@v6.9.1` and the "
        "Socket.IO server with `npm ci` in `bench/peers/socketio/`. The Python side needs the "
        "`bench` dependency group (picows, python-socketio, matplotlib, py-spy; without it: "
        "`uv run --with picows --with python-socketio --with matplotlib --with py-spy python "
        "-m bench`). Raw results go to `bench/results/` (not committed). "
        "`--merge FILE --systems NAME` re-runs one system into an earlier results file."
    )
    add("")
    add("## Setup")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| machine | {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']} |")
    if pin["server_cpus"] is not None:
        add(
            f"| CPU pinning | servers (all their processes, Redis included) on CPU "
            f"{','.join(map(str, pin['server_cpus']))}; load generator on CPU "
            f"{','.join(map(str, pin['loadgen_cpus']))} |"
        )
    else:
        add("| CPU pinning | none |")
    add(
        f"| load generator | {pin['loadgen_workers']} processes, {m['loadgen_client']}; "
        "open-loop sends at a fixed rate; every message carries its send time |"
    )
    add(
        f"| run | {results['mode']}, {results.get('seconds', '?')} s, "
        f"started {results['started']} |"
    )
    add(
        f"| fan-out | {sizes['clients']:,} clients in rooms of {sizes['room_size']}; fixed "
        f"{sizes['fixed_rate']:g} msg/s ({sizes['fixed_rate'] * (sizes['room_size'] - 1):,.0f} "
        f"deliveries/s) for {sizes['fixed_seconds']:g} s per step; all systems up at once, "
        f"one step each in turn, {sizes.get('fixed_rounds', 1)} rounds |"
    )
    paired_one = any(e.get("one2one_rounds") for _, e in _systems(results))
    add(
        f"| one-to-one | {sizes['pairs']:,} pairs of the same clients, {sizes['one2one_rate']:g} "
        f"msg/s for {sizes['one2one_seconds']:g} s"
        + (
            f" per step; all systems up at once, one step each in turn, "
            f"{sizes.get('fixed_rounds', 1)} rounds |"
            if paired_one
            else " |"
        )
    )
    add(
        f"| ramp | fan-out topology, steps of {sizes['ramp_seconds']:g} s at "
        f"{', '.join(f'{r:g}' for r in sizes['ramp_rates'])} msg/s (stops at the first "
        "step that is not sustained) |"
    )
    add(f"| idle | {sizes['idle']:,} connections to the one connection-holding process |")
    add(f"| message | {sizes['pad']} characters of content |")
    add("")
    add("Versions:")
    add("")
    for _name, entry in systems:
        versions = ", ".join(f"{k} {v}" for k, v in entry["system"]["versions"].items())
        add(f"- **{_label(entry)}**: {versions}")
    add("")
    if m.get("cpu_accounting") == "schedstat":
        cpu_source = (
            "server CPU from `/proc/<pid>/task/*/schedstat` (the scheduler's exact run time "
            "of every thread of every process of the system, Redis and FerretDB included; "
            "utime+stime from `/proc/<pid>/stat` when a thread ended during the step), "
            "not utime+stime alone: this kernel samples those at its 250 Hz tick, so a "
            "process that runs in short bursts is charged 4 ms or nothing, too coarse for "
            "a step of a few hundred CPU-milliseconds"
        )
    else:
        cpu_source = (
            "server CPU from `/proc/<pid>/stat` (utime+stime of every process of the "
            "system, Redis and FerretDB included)"
        )
    add(
        f"Measured: {cpu_source} over each step; RSS from `/proc/<pid>/statm`; "
        "latency from the send timestamp in the content to its receipt at the other client "
        "(same clock); the load generator's own CPU per step. A step is *sustained* when at "
        "least 99 % of the expected deliveries arrived, the last one within 1 s after "
        "sending stopped, and p99 stayed under 1 s."
    )
    add("")
    if chart_name:
        add(f"![benchmarks]({chart_name})")
        add("")

    targets = _targets_section(results)
    if targets:
        add(targets)

    # (a) fan-out fixed
    add("## (a) Fan-out at a fixed rate")
    add("")
    add(
        "| system | deliveries/s | p50 ms | p99 ms | p99.9 ms | server CPU-s per 1k deliveries | "
        "x this project | server CPU % | RSS MiB (all processes) | load generator CPU % "
        "(sending) |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    base_fan = base.get("fanout") or {}
    for _name, entry in systems:
        f = entry.get("fanout")
        if not f:
            add(
                f"| {_label(entry)} | {_why_missing(entry, 'fixed', 'fanout', 'traffic')} |||||||||"
            )
            continue
        add(
            f"| {_label(entry)} | {_fmt(f['deliveries_per_s'])} | {_fmt(_lat(f, 'p50'), 2)} | "
            f"{_fmt(_lat(f, 'p99'), 2)} | {_fmt(_lat(f, 'p99.9'), 2)} | "
            f"{_fmt(f['cpu_per_1k_deliveries'], 3)} | "
            f"{_ratio(f['cpu_per_1k_deliveries'], base_fan.get('cpu_per_1k_deliveries'))} | "
            f"{_fmt(100 * f['server_cpu_util'], 0)} | {_fmt(f['server_rss_total'] / 2**20, 0)} | "
            f"{_fmt(100 * f.get('loadgen_send_share', f['loadgen_cpu_share']), 0)} |"
            + (f" ⚠ {f['errors']} errors" if f.get("errors") else "")
        )
    add("")
    if base_fan.get("server_cpu"):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in base_fan["server_cpu"].items())
        add(f"This project's CPU-seconds by process in this step: {parts}.")
        add("")
    add(_rounds_section(results, "fanout"))

    # (b) one-to-one
    add("## (b) One-to-one chat at a fixed rate: end-to-end latency")
    add("")
    add(
        "| system | messages | delivered | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "sender ack p50 / p99 ms | "
        "server CPU-s per 1k messages | x this project |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    base_one = base.get("one2one") or {}
    for _name, entry in systems:
        o = entry.get("one2one")
        if not o:
            add(
                f"| {_label(entry)} | {_why_missing(entry, 'fixed', 'fanout', 'traffic')} |||||||||"
            )
            continue
        ack = o.get("ack_latency_ms", {})
        add(
            f"| {_label(entry)} | {o['sent']:,} | {o['delivered']:,} | {_fmt(_lat(o, 'p50'), 2)} | "
            f"{_fmt(_lat(o, 'p90'), 2)} | {_fmt(_lat(o, 'p99'), 2)} | "
            f"{_fmt(_lat(o, 'p99.9'), 2)} | "
            f"{_fmt(ack.get('p50'), 2)} / {_fmt(ack.get('p99'), 2)} | "
            f"{_fmt(o['cpu_per_1k_deliveries'], 3)} | "
            f"{_ratio(o['cpu_per_1k_deliveries'], base_one.get('cpu_per_1k_deliveries'))} |"
            + (f" ⚠ {o['errors']} errors" if o.get("errors") else "")
        )
    add("")
    add(
        "The sender's acknowledgement is `message_ack` here (after the MongoDB write), the "
        "publish reply for Centrifugo, the ack callback for Socket.IO."
    )
    add("")
    one_rounds = _rounds_section(results, "one2one")
    if one_rounds:
        add(one_rounds)

    # (d) saturation
    add("## (d) Saturation: highest delivery rate")
    add("")
    add(
        "| system | max sustained deliveries/s | its p99 ms | max with p99 ≤ 100 ms | its p99 ms | "
        "x this project (p99 ≤ 100 ms) | CPU-s per 1k at that step | ramp stopped by |"
    )
    add("|---|---|---|---|---|---|---|---|")
    base_fast = _ramp_best(base["ramp"])[1] if base.get("ramp") else {}
    for _name, entry in systems:
        r = entry.get("ramp")
        if not r:
            add(f"| {_label(entry)} | {_why_missing(entry, 'traffic')} |||||||")
            continue
        best, fast = _ramp_best(r)
        bound = (
            " (≥; load generator bound)"
            if r.get("limited_by_loadgen")
            else " (≥; the ramp ended)"
            if r.get("stopped_by") == "end of ramp"
            else ""
        )
        add(
            f"| {_label(entry)} | {_fmt(best.get('deliveries_per_s'))}{bound} | "
            f"{_fmt(_lat(best, 'p99'), 1)} | {_fmt(fast.get('deliveries_per_s'))} | "
            f"{_fmt(_lat(fast, 'p99'), 1)} | "
            f"{_ratio(fast.get('deliveries_per_s'), base_fast.get('deliveries_per_s'))} | "
            f"{_fmt(fast.get('cpu_per_1k_deliveries'), 3)} | {r.get('stopped_by')} |"
        )
    add("")
    add(
        "Each system is ramped once per run, one step of each rate. Near a system's limit "
        "the server core is busy all the time, and a step's p99 depends on how the queue "
        "wanders within its few seconds: the same step of the same commit has passed at "
        "under 100 ms in one run and failed at over 200 ms in the next, for this project "
        "and for the peers alike. So the p99 ≤ 100 ms figure can move by a step or two "
        "(1.2x to 1.5x) between runs; compare several runs before reading a ratio from it."
    )
    add("")
    knee = _knee_cpu_section(results)
    if knee:
        add(knee)
        add("")
    add("<details><summary>every ramp step</summary>")
    add("")
    add(
        "| system | offered msg/s | deliveries/s | delivered / expected | p50 ms | p99 ms | "
        "server CPU % | load generator CPU % (sending) |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for _name, entry in systems:
        for step in (entry.get("ramp") or {}).get("steps", []):
            add(
                f"| {_label(entry)} | {step['offered_rate']:g} | "
                f"{_fmt(step['deliveries_per_s'])} | "
                f"{step['delivered']:,} / {step['expected']:,} | {_fmt(_lat(step, 'p50'), 1)} | "
                f"{_fmt(_lat(step, 'p99'), 1)} | {_fmt(100 * step['server_cpu_util'], 0)} | "
                f"{_fmt(100 * step.get('loadgen_send_share', step['loadgen_cpu_share']), 0)} |"
            )
    add("")
    add("</details>")
    add("")

    # (c) idle
    add("## (c) Idle connections")
    add("")
    add(
        "| system | connections | connect time s | RSS per connection, connection process | "
        "RSS per connection, all processes | x this project | CPU while idle (s over "
        f"{sizes['idle_seconds']:g} s) |"
    )
    add("|---|---|---|---|---|---|---|")
    base_idle = base.get("idle") or {}
    for _name, entry in systems:
        i = entry.get("idle")
        if not i:
            add(f"| {_label(entry)} | {_why_missing(entry, 'idle')} ||||||")
            continue
        add(
            f"| {_label(entry)} | {i['connections']:,} / {i['requested']:,} | "
            f"{_fmt(i['connect_seconds'], 1)} | {_fmt(i['main_rss_per_conn'] / 1024, 1)} KiB "
            f"({i['main_process']}) | {_fmt(i['total_rss_per_conn'] / 1024, 1)} KiB | "
            f"{_ratio(i['main_rss_per_conn'], base_idle.get('main_rss_per_conn'))} | "
            f"{_fmt(i['idle_cpu_s'], 2)} |"
        )
    add("")
    if base_idle.get("idle_cpu"):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in base_idle["idle_cpu"].items())
        connect = ", ".join(f"{k} {v:.2f}" for k, v in base_idle.get("connect_cpu", {}).items())
        settle = base_idle.get("settle_seconds")
        drained = (
            f" (until the servers were quiet, {settle:.0f} s after the last connect, so the "
            "work connects leave behind, such as recording new users, counts here)"
            if settle is not None
            else ""
        )
        add(
            f"This project while connecting ({base_idle['connections']:,}): CPU-s {connect}"
            f"{drained}; in the idle window after: {parts}."
        )
        add("")

    # notes
    add("## What each system does per message")
    add("")
    for name, entry in systems:
        note = WORK_NOTES.get(name, entry["system"].get("notes", ""))
        add(f"- **{_label(entry)}**: {note}")
        if entry.get("skipped"):
            add(f"  *Not run*: {entry['skipped']}.")
    add("")
    add(
        "So the peers do strictly less per message: none of them stores the message durably "
        "before acknowledging it, and Socket.IO does not touch Redis on the local delivery "
        "path at all. The `CHAT_PERSISTENCE=off` row, when present, is the like-for-like one."
    )
    add("")
    add("## Caveats")
    add("")
    add(
        "- Two cores only: the servers get one, the load generator the other, so "
        "*saturation* is per core. This project's six processes share that core; a peer "
        "that is a single process loses nothing by it. CPU-seconds per 1,000 deliveries "
        "does not depend on the pinning."
    )
    add(
        "- *≥; load generator bound*: the load generator's core was ≥ 85 % busy while "
        "sending, so the peer's real limit is higher than the number shown. *≥; the ramp "
        "ended*: the peer sustained the top step. Elsewhere the load generator's CPU column "
        "shows it had room: the limit measured is the server's."
    )
    add(
        "- The machine is shared with other work; numbers move by up to ±30% between "
        "runs and between minutes of one run. The fan-out at the fixed rate is therefore "
        "measured with all systems up at once, in alternating rounds (see its section); the "
        "other scenarios still run one system after another, so compare their ratios with "
        "that in mind."
    )
    add(
        "- Every write to a client socket wakes the load generator on the other CPU. On this "
        "virtual machine a loopback send that wakes a process on another CPU costs about "
        "32 µs of the sender's CPU, against about 8 µs when the receiver shares the CPU "
        "(`python -m bench.sendcost`: 3,000 sends of 400 bytes to a pinned redis-server): in "
        "the fan-out the ten socket writes of each message cost up to about 0.035 CPU-s per "
        "1k deliveries, which every system pays alike."
    )
    add(
        "- On this virtual machine a thread is also charged CPU for waking from a sleep "
        "(`python -m bench.wakecost`): for a `time.sleep(3)` in a process doing nothing "
        "else, from under 1 ms to 24 ms per wake-up, with the sleep overrunning by up to "
        "30 ms, depending on the hour (most when the machine is otherwise idle). So the "
        "background CPU (and with it the CPU per delivery at the fixed rates) grows with "
        "the number of processes that sleep with timers (six in this project, two for "
        "Centrifugo and Socket.IO), and it has varied threefold or more between days for "
        "every system."
    )
    add(
        "- This project's FerretDB (SQLite backend) setup: presence runs with "
        "`CHAT_BATCH_SIZE=99` because FerretDB 1.24 does not answer an `update` command of "
        "100 or more statements (see the notes below)."
    )
    add("")
    add("## Notes on this project's storage path (FerretDB 1.24, SQLite backend)")
    add("")
    add(
        "Found while building this benchmark, measured with pymongo against a fresh FerretDB "
        "1.24.2 on this machine:"
    )
    add("")
    add(
        "- **An `update` by `_id` scans the whole collection**: `update_one({'_id': …})` costs "
        "2.2 ms with 100 documents in the collection, 3.2 ms with 1,000 and 11.3 ms with "
        "5,000, while `find_one` by `_id` stays at 0.8 ms and an insert at about 1 ms. The "
        "send path therefore writes nothing but the insert: a conversation's last seq "
        "lives in Redis (its head, see docs/architecture.md). Until 2026-11-29 a second "
        "write per batch moved `conversations.lastSeq`, and that update was three quarters "
        "of the CPU per stored message (fan-out 1.64 → 0.43 CPU-s per 1k deliveries, "
        "one-to-one 15.4 → 3.2 per 1k messages without it). Read receipts (`reads`) and "
        "presence (`users.lastSeen`) still update by `_id`: their cost grows with the "
        "number of readers and users, not with the traffic."
    )
    add(
        "- **An `update` command of 100 or more statements never returns** (99 is fine) and "
        "holds SQLite's write lock meanwhile, so every other write stalls until the client "
        "times out (`SERVICE_UNAVAILABLE` for senders). Callers that can reach 100: presence "
        "`users.lastSeen` (one statement per transition of a stream batch, up to "
        "`CHAT_BATCH_SIZE`=200; the bench runs presence with 99). The services split every "
        "bulk write into chunks "
        "of 64 statements (`shared/mongo.py`, `BULK_CHUNK`), so none of them reaches it; "
        "the bench's presence setting predates that and is kept so runs stay comparable."
    )
    add(
        "- On a real MongoDB both are index lookups; the numbers above are this project on "
        "FerretDB/SQLite, as `make run` starts it."
    )
    add("")
    profiles = _latest_profiles()
    if profiles:
        add("## Where this project spends its CPU (py-spy)")
        add("")
        for profile in profiles:
            add(_profile_section(profile))
    return "\n".join(lines) + "\n"


def _rounds_section(results: dict[str, Any], kind: str) -> str:
    """A fixed-rate scenario's rounds: each system's figure per round and same-round ratios."""
    key = f"{kind}_rounds"
    systems = [(n, e) for n, e in _systems(results) if e.get(key)]
    if not systems:
        return ""
    if kind == "fanout":
        quiet = results.get("sizes", {}).get("quiet_seconds")
        if quiet is None and results.get("machine", {}).get("cpu_accounting") == "schedstat":
            quiet = 4  # the one run that waited before the limit was recorded (8d81015)
        settle = (
            f"After its step each system was given up to {quiet:g} s to fall back to its "
            "background CPU, so work a step leaves behind (FerretDB writes, with persistence "
            "on) does not run during the next system's step. "
            if quiet
            else ""
        )
        intro = (
            "All systems were up and connected at once; each held the fixed rate for one step "
            "in turn, round after round (the order rotating), so a slower phase of the machine "
            f"moves every system's figure of that round. {settle}"
            "The table shows the median round; here "
            "are all rounds (server CPU-s per 1k deliveries), the ratio against this project "
            "with persistence off taken round by round, and each system's background CPU with "
            "its clients connected and nobody sending (heartbeats, timers), which at this rate "
            "is part of every delivery's cost."
        )
    else:
        samples = next((e[kind].get("latency_samples") for _, e in systems), None)
        intro = (
            "One-to-one was measured as the fan-out was: all systems up at once, one step "
            "each in turn, round after round. The table shows the median round's CPU and "
            "counts; its latency percentiles are over the samples of every round"
            + (f" ({samples:,} for this project)" if samples else "")
            + ". All rounds (server CPU-s per 1k messages) and the same-round ratios:"
        )
    lines = [
        intro,
        "",
        "| system | rounds | median ratio to this project (persistence off), per round | "
        "background CPU ms/s |",
        "|---|---|---|---|",
    ]
    for name, entry in systems:
        rounds = ", ".join(_fmt(r["cpu_per_1k_deliveries"], 3) for r in entry[key])
        ratios = round_ratios(results["systems"], NOPERSIST, name, kind)
        ratio = (
            f"{statistics.median(ratios):.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})"
            if ratios
            else "—"
        )
        background = entry.get("background_cpu_per_s")
        lines.append(
            f"| {_label(entry)} | {rounds} | {ratio} | "
            f"{_fmt(None if background is None else 1000 * background, 1)} |"
        )
    lines.append("")
    return "\n".join(lines)


def _targets_section(results: dict[str, Any]) -> str:
    """Issue #8's targets against this run's figures, each marked met or not."""
    systems = results["systems"]
    if NOPERSIST not in systems:
        return ""

    def cpu_over(peer: str, kind: str, ours: str = NOPERSIST) -> float | None:
        ratios = round_ratios(systems, peer, ours, kind)  # ours / peer, round by round
        return statistics.median(ratios) if ratios else None

    def cpu_row(peer: str, target: str, limit: float, stretch: float | None = None) -> str:
        if peer not in systems:
            return ""
        figures = {kind: cpu_over(peer, kind) for kind in ("fanout", "one2one")}
        if None in figures.values():
            return ""
        stored = cpu_over(peer, "fanout", BASE) if BASE in systems else None
        met = all(r is not None and r <= limit for r in figures.values())
        verdict = "yes" if met else "**no**"
        if stretch is not None:
            below = all(r is not None and r < stretch for r in figures.values())
            verdict += f"; the stretch (below it): {'yes' if below else '**no**'}"
        return (
            f"| {target} | fan-out {figures['fanout']:.2f}x, one-to-one "
            f"{figures['one2one']:.2f}x"
            + (f" (fan-out with persistence on: {stored:.2f}x)" if stored else "")
            + f" | {verdict} |"
        )

    rows = [
        cpu_row("socketio", "server CPU per delivery at most half of Socket.IO's", 0.5),
        cpu_row("centrifugo", "server CPU per delivery within 1.5x of Centrifugo's", 1.5, 1.0),
    ]
    per_message = max(results["sizes"]["room_size"] - 1, 1)
    rate = math.ceil(TARGET_DELIVERIES / per_message)
    at_rate = []
    met_p99: bool | None = None
    if rate not in results["sizes"].get("ramp_rates", []):
        at_rate = ["not measured: this run's ramp had no such step"]
    for name, entry in _systems(results) if not at_rate else []:
        steps = (entry.get("ramp") or {}).get("steps", [])
        step = next((s for s in steps if s["offered_rate"] == rate), None)
        if step is None:
            if steps:  # the ramp stopped at a lower rate
                at_rate.append(f"{_label(entry)}: its ramp stopped below it")
            continue
        p99 = _lat(step, "p99")
        held = _sustained(step)  # as the saturation table judges a step
        at_rate.append(f"{_label(entry)} {_fmt(p99, 1)} ms" + ("" if held else " (not sustained)"))
        if name == NOPERSIST:
            met_p99 = held and p99 <= TARGET_P99_MS
    if at_rate:
        rows.append(
            f"| p99 under {TARGET_P99_MS:g} ms at {TARGET_DELIVERIES:,} deliveries/s (fan-out, "
            f"the {rate:g} msg/s ramp step) | {'; '.join(at_rate)} | "
            f"{'not measured' if met_p99 is None else 'yes' if met_p99 else '**no**'} |"
        )
    idle = (systems.get(BASE) or {}).get("idle") or (systems[NOPERSIST].get("idle") or {})
    if idle.get("main_rss_per_conn"):
        kib = idle["main_rss_per_conn"] / 1024
        rows.append(
            f"| at most {TARGET_IDLE_KIB:g} KiB RSS per idle connection | {kib:.1f} KiB in the "
            f"{idle['main_process']} process ({idle['total_rss_per_conn'] / 1024:.1f} KiB across "
            f"all) | {'yes' if kib <= TARGET_IDLE_KIB else '**no**'} |"
        )
    rows = [r for r in rows if r]
    if not rows:
        return ""
    return "\n".join(
        [
            "## Targets",
            "",
            "Issue #8's targets against this run. CPU: this project with persistence off (the "
            "like-for-like row; the peers store nothing) over the peer, the median of the "
            "same-round ratios of the fixed-rate steps ((a) and (b) below).",
            "",
            "| target | this run | met? |",
            "|---|---|---|",
            *rows,
            "",
            "Some of these sit at their limit, and one run does not settle them: at the "
            "50,000 deliveries/s step this project's processes fill the server core, so that "
            "step's p99 moves from run to run by more than the target's margin, and the CPU "
            "ratios move by about a tenth. Read them over several runs.",
            "",
        ]
    )


def _knee_cpu_section(results: dict[str, Any]) -> str:
    """Server CPU per delivery by process at one ramp step every system ran: the
    highest at which this project with persistence off kept its p99 within 100 ms."""
    ramp = (results["systems"].get(NOPERSIST) or {}).get("ramp")
    rate = _ramp_best(ramp)[1].get("offered_rate") if ramp else None
    if rate is None:
        return ""
    rows = []
    for _name, entry in _systems(results):
        step = next(
            (s for s in (entry.get("ramp") or {}).get("steps", []) if s["offered_rate"] == rate),
            None,
        )
        if not step or not step.get("delivered") or not step.get("server_cpu"):
            continue
        per = {p: 1e6 * cpu / step["delivered"] for p, cpu in step["server_cpu"].items()}
        parts = ", ".join(f"{p} {us:.1f}" for p, us in per.items() if us >= 0.05)
        rows.append(
            f"| {_label(entry)} | {sum(per.values()):.1f} | {parts} | "
            f"{_fmt(100 * step['server_cpu_util'], 0)} | {_fmt(_lat(step, 'p99'), 1)} |"
        )
    return "\n".join(
        [
            f"Server CPU per delivery at the {rate:g} msg/s step, the highest at which this "
            "project with persistence off kept its p99 within 100 ms in this run, in µs "
            "(CPU-seconds of each process over the step, divided by the deliveries in it). "
            "The server core is nearly full there, so what a system spends per delivery "
            "decides how far past this step it can go. A system whose ramp stopped below this "
            "step is not listed:",
            "",
            "| system | µs per delivery | by process | server CPU % | p99 ms |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def _why_missing(entry: dict[str, Any], *phases: str) -> str:
    """Why a row is empty: the first error recorded for any of ``phases``."""
    if entry.get("skipped"):
        return "not run (see notes)"
    errors = entry.get("errors") or {}
    err = next((errors[p] for p in phases if errors.get(p)), None)
    return f"failed: {err[:80]}" if err else "not run"


def _profile_section(profile: dict[str, Any]) -> str:
    system = profile.get("system", "chat")
    title = "this project" if system == "chat" else "this project with CHAT_PERSISTENCE=off"
    lines = [f"### {title}", ""]
    load = profile.get("load", {})
    lines.append(
        f"`python -m bench --profile --profile-system {system}"
        + (" --no-pin" if profile.get("server_cpus") is None else "")
        + (f" --profile-rate {profile['rate']:g}" if profile.get("rate") else "")
        + f"`: fan-out at {profile['rate']:g} msg/s for "
        f"{profile['seconds']:g} s, `py-spy record --nonblocking --rate 200` on the gateway, "
        f"delivery and metrics processes ({profile['file']}). Percentages are of each "
        "process's busy samples; *self* = in the function's own code, *total* = anywhere on "
        "the stack. "
        "Time in C code without Python frames (uvloop's I/O, socket writes) shows as the "
        "nearest Python caller (`run_app` for the event loop itself). "
        "py-spy counts a sample whenever the process is runnable, also while it waits for "
        "the core the servers share: near saturation a process woken by a socket write "
        "often waits there (in `run_app`), and a process whose write wakes another is often "
        "preempted right after it (in the writing function), so *busy* and those functions' "
        "*self* shares overstate CPU; the CPU-seconds above are the scheduler's own."
        + (
            " Servers were not pinned (`--no-pin`): on one shared core a process preempted "
            "right after waking Redis in a socket write would be sampled in that write."
            if profile.get("server_cpus") is None
            else ""
        )
    )
    lines.append("")
    if load.get("server_cpu"):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in load["server_cpu"].items())
        lines.append(f"Server CPU-seconds by process during the profiled load: {parts}.")
        lines.append("")
    for name in ("gateway", "delivery", "metrics"):
        s = profile.get(name)
        if not s:
            continue
        lines.append(f"**{name}** ({s['samples']} samples, busy {s['busy_share']:.0%} of the time)")
        lines.append("")
        lines.append("| self % | function | | total % | function |")
        lines.append("|---|---|---|---|---|")
        for a, b in zip(s["self"][:12], s["total"][:12], strict=False):
            lines.append(
                f"| {a['percent']} | `{a['function']}` | | {b['percent']} | `{b['function']}` |"
            )
        lines.append("")
    return "\n".join(lines)


# --- chart -------------------------------------------------------------------------------------


def _chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = [(n, e) for n, e in _systems(results) if not e.get("skipped")]
    labels = [n for n, _ in systems]
    colors = ["#d62728" if n.startswith("chat") else "#1f77b4" for n in labels]

    def values(fn: Any) -> list[float]:
        out = []
        for _, e in systems:
            try:
                v = fn(e)
            except (KeyError, TypeError):
                v = None
            out.append(float(v) if v is not None else 0.0)
        return out

    panels = [
        (
            "server CPU-s per 1,000 deliveries\n(fan-out, fixed rate; lower is better)",
            values(lambda e: e["fanout"]["cpu_per_1k_deliveries"]),
            True,
        ),
        (
            "max deliveries/s with p99 ≤ 100 ms\n(one server core; higher is better)",
            values(lambda e: _ramp_best(e["ramp"])[1].get("deliveries_per_s")),
            True,
        ),
        (
            "one-to-one latency p99, ms\n(fixed rate; lower is better)",
            values(lambda e: e["one2one"]["latency_ms"]["p99"]),
            True,
        ),
        (
            "RSS per idle connection, KiB\n(connection process; lower is better)",
            values(lambda e: e["idle"]["main_rss_per_conn"] / 1024),
            False,
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (title, vals, log) in zip(axes.flat, panels, strict=True):
        bars = ax.bar(labels, vals, color=colors)
        ax.set_title(title, fontsize=10)
        if log and any(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        for bar, v in zip(bars, vals, strict=True):
            if v > 0:
                ax.annotate(
                    f"{v:.3g}",
                    (bar.get_x() + bar.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
    fig.suptitle(
        f"chat-realtime vs peers ({results['mode']} run {results['started']}, "
        f"{results['machine']['cores']} cores)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
