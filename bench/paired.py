"""The fixed rates (fan-out, one-to-one) with every system up at once, measured in turns.

Measured one system after another, the fixed-rate figures moved by up to
±30% between runs: the machine (a shared virtual one) has slower and faster
phases lasting minutes, and a whole system's turn fits inside one. Here every
system is started and connected first, then each holds the fixed rate for a
short step in turn, round after round, the order rotating each round. Each
system's figure is its median round, and the ratio against this project is
taken per round, between steps seconds apart, so a slow phase moves both.

The systems that are not being measured stay connected and idle; their
background work (heartbeats, timers) runs on the same CPUs and is measured
once, with nobody sending, as ``background_cpu_per_s``. After its step a
system is given time (a few seconds at most) to finish what the step left
(this project with persistence on writes to FerretDB well after the last
delivery), so that work does not share the CPU with the next system's step.
"""

from __future__ import annotations

import time
import traceback
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import procstat
from bench.scenarios import ACK_POINTS, LAT_POINTS, Runner, Sizes, percentiles
from bench.systems import SYSTEMS, System

BACKGROUND_SECONDS = 5.0
# After a step: back to its background CPU plus this margin (CPU-s per s),
# polled in short windows, for at most Sizes.quiet_seconds.
QUIET_MARGIN = 0.02
QUIET_WINDOW = 0.2
# What is measured in turns, in this order: the results key and its label.
KINDS = {"fanout": "fan-out fixed", "one2one": "one-to-one"}


def _median_step(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose CPU per delivery is the median (the lower middle of an even count)."""
    ranked = sorted(steps, key=lambda s: s["cpu_per_1k_deliveries"] or float("inf"))
    return ranked[(len(ranked) - 1) // 2]


def paired_fixed(
    names: list[str],
    kinds: list[str],
    workers: int,
    sizes: Sizes,
    server_cpus: set[int] | None,
    loadgen_cpus: set[int] | None,
    workdir: Path,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Per system and kind (of ``KINDS``): ``fanout`` / ``one2one`` (the median round),
    ``fanout_rounds`` / ``one2one_rounds``, and any error."""
    from bench.loadgen import Pool  # picows: only where clients are run

    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    started: dict[str, System] = {}
    pools: list[Any] = []
    runners: dict[str, Runner] = {}
    width = max(len(loadgen_cpus or ()), 1)
    try:
        log(f"starting {', '.join(names)} (fixed rates, all systems up together)")
        for name in names:
            started[name] = SYSTEMS[name](workdir / name / "fixed", server_cpus)
        # Starting is mostly waiting for readiness: all at once, in threads.
        with ThreadPoolExecutor(len(names) or 1) as executor:
            failures = dict(
                zip(names, executor.map(_start, [started[n] for n in names]), strict=True)
            )
        for name in names:
            system = started[name]
            try:
                failure = failures[name]
                if failure is not None:
                    raise failure
                pool = Pool(workers, loadgen_cpus)
                pools.append(pool)
                runner = Runner(system, pool, sizes, width, log)
                out[name]["setup"] = runner.setup_chat_topology()
                runner.warmup()
                runners[name] = runner
            except Exception as exc:
                out[name]["error"] = repr(exc)
                log(f"{name}: FAILED: {exc!r}\n{traceback.format_exc()}\n{system.logs()[-3000:]}")
        _background(runners, out, log)
        for kind in KINDS:
            if kind in kinds:
                _rounds(kind, runners, sizes, out, log)
    finally:
        for pool in pools:
            pool.close()
        for system in started.values():
            system.stop()
    return out


def _rounds(
    kind: str,
    runners: dict[str, Runner],
    sizes: Sizes,
    out: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    """``kind``'s steps for every system in turn, ``sizes.fixed_rounds`` times (the
    order rotating): ``out[name][kind]`` is the median round, its latency percentiles
    over every round's samples, and ``out[name][kind + "_rounds"]`` the rounds."""
    order = list(runners)
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
    samples: dict[str, list[tuple[array[int], array[int]]]] = {name: [] for name in order}
    for round_ in range(sizes.fixed_rounds):
        shift = round_ % len(order) if order else 0
        for name in order[shift:] + order[:shift]:
            runner = runners[name]
            if kind == "fanout":
                rate, seconds, senders = (
                    sizes.fixed_rate,
                    sizes.fixed_seconds,
                    runner.fanout_senders,
                )
            else:
                rate, seconds, senders = (
                    sizes.one2one_rate,
                    sizes.one2one_seconds,
                    runner.pair_senders,
                )
            label = f"{name}: {KINDS[kind]}, round {round_ + 1}/{sizes.fixed_rounds}"
            steps[name].append(runner.load(rate, seconds, senders, label))
            samples[name].append(runner.last_samples)
            _quiet(runner.system, out[name]["background_cpu_per_s"], sizes.quiet_seconds, name, log)
    for name, rounds in steps.items():
        if rounds:
            out[name][kind] = _pooled(_median_step(rounds), samples[name])
            out[name][f"{kind}_rounds"] = [
                {
                    "cpu_per_1k_deliveries": s["cpu_per_1k_deliveries"],
                    "deliveries_per_s": s["deliveries_per_s"],
                    "p99_ms": s["latency_ms"]["p99"],
                }
                for s in rounds
            ]


def _pooled(step: dict[str, Any], samples: list[tuple[array[int], array[int]]]) -> dict[str, Any]:
    """``step`` with its latency percentiles taken over the samples of every round."""
    latencies: array[int] = array("q")
    acks: array[int] = array("q")
    for lat, ack in samples:
        latencies.extend(lat)
        acks.extend(ack)
    return {
        **step,
        "latency_ms": percentiles(latencies, LAT_POINTS),
        "ack_latency_ms": percentiles(acks, ACK_POINTS),
        "latency_samples": len(latencies),
    }


def _start(system: System) -> Exception | None:
    try:
        system.start()
    except Exception as exc:
        return exc
    return None


def _background(
    runners: dict[str, Runner], out: dict[str, dict[str, Any]], log: Callable[[str], None]
) -> None:
    """Every system's CPU with its clients connected and nobody sending."""
    pids = {name: runner.system.pids() for name, runner in runners.items()}
    before = {name: procstat.snapshot(p) for name, p in pids.items()}
    time.sleep(BACKGROUND_SECONDS)
    for name, p in pids.items():
        cpu = procstat.cpu_delta(before[name], procstat.snapshot(p))
        out[name]["background_cpu_per_s"] = round(sum(cpu.values()) / BACKGROUND_SECONDS, 4)
        log(f"  {name}: background {1000 * out[name]['background_cpu_per_s']:.1f} ms/s")


def _quiet(
    system: System, background: float, limit: float, name: str, log: Callable[[str], None]
) -> None:
    """Wait until ``system`` is back to its background CPU (or ``limit`` seconds passed)."""
    pids = system.pids()
    waited = 0.0
    while waited < limit:
        before = procstat.snapshot(pids)
        time.sleep(QUIET_WINDOW)
        waited += QUIET_WINDOW
        used = sum(procstat.cpu_delta(before, procstat.snapshot(pids)).values()) / QUIET_WINDOW
        if used <= background + QUIET_MARGIN:
            if waited > QUIET_WINDOW:
                log(f"  {name}: quiet again {waited:.1f} s after its step")
            return
    log(f"  {name}: still busy {limit:g} s after its step ({used:.2f} CPU-s/s)")


def round_ratios(
    results: dict[str, Any], base: str, other: str, kind: str = "fanout"
) -> list[float]:
    """``other``'s CPU per delivery over ``base``'s, round by round."""
    a = results.get(base, {}).get(f"{kind}_rounds") or []
    b = results.get(other, {}).get(f"{kind}_rounds") or []
    return [
        y["cpu_per_1k_deliveries"] / x["cpu_per_1k_deliveries"]
        for x, y in zip(a, b, strict=False)
        if x["cpu_per_1k_deliveries"] and y["cpu_per_1k_deliveries"]
    ]
