"""``python -m bench``: this project side by side with Centrifugo, Socket.IO and python-socketio.

Examples:
  uv run python -m bench                         # everything (about 10 minutes)
  uv run python -m bench --quick                 # small sizes, a smoke run (~2 minutes)
  uv run python -m bench --systems chat,centrifugo --scenarios fanout,ramp
  uv run python -m bench --idle 20000            # more idle connections
  uv run python -m bench --profile               # py-spy on gateway + delivery under fan-out
  uv run python -m bench --report bench/results/run-....json   # re-render docs only

Bench-only Python packages (picows, python-socketio, matplotlib, py-spy) come
from the `bench` dependency group, or `uv run --with ...` (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat
from bench.scenarios import FULL, QUICK, Runner, Sizes, sizes_dict
from bench.systems import ROOT, SYSTEMS, System, persistence_switch_supported

RESULTS = ROOT / "bench" / "results"
SCENARIOS = ("idle", "fanout", "one2one", "ramp")
DEFAULT_SYSTEMS = ("chat", "chat-nopersist", "centrifugo", "socketio", "python-socketio")


def log(message: str) -> None:
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()


def parse_cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        elif part:
            cpus.add(int(part))
    return cpus


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    try:
        from importlib.metadata import version

        picows = version("picows")
    except Exception:
        picows = "?"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadgen_client": f"picows {picows} on uvloop",
        "nofile": procstat.raise_nofile(),
        "cpu_accounting": "schedstat",
    }


@dataclass
class Plan:
    """What every system is run with."""

    args: argparse.Namespace
    sizes: Sizes
    scenarios: list[str]
    server_cpus: set[int] | None
    loadgen_cpus: set[int] | None
    workdir: Path


def ensure_peers(names: list[str]) -> None:
    wanted = set()
    if "centrifugo" in names:
        wanted.add("centrifugo")
    if "socketio" in names:
        wanted.add("socketio")
    for what in sorted(wanted):
        script = ROOT / "bench" / "install_peers.sh"
        result = subprocess.run([str(script), what], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log(f"installing {what} failed:\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}")
        else:
            log(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else f"{what} ok")


def run_system(name: str, plan: Plan) -> dict[str, Any]:
    from bench.loadgen import Pool

    args, sizes, scenarios = plan.args, plan.sizes, plan.scenarios
    server_cpus, loadgen_cpus, workdir = plan.server_cpus, plan.loadgen_cpus, plan.workdir

    cls = SYSTEMS[name]
    out: dict[str, Any] = {"system": cls(workdir / name, server_cpus).describe()}
    if name == "chat-nopersist" and not persistence_switch_supported():
        out["skipped"] = (
            "the services do not understand CHAT_PERSISTENCE yet (no `persistence` field in "
            "shared.settings.Settings)"
        )
        log(f"{name}: skipped: {out['skipped']}")
        return out
    started = time.monotonic()
    loadgen_width = len(loadgen_cpus or os.sched_getaffinity(0))
    # Idle connections on a fresh instance of their own, so the RSS baseline is a
    # just-started server and the closing of N connections does not overlap the rest.
    phases = []
    if "idle" in scenarios:
        phases.append(("idle", ["idle"]))
    # The fixed rates (fan-out, one-to-one) are measured for all systems together
    # (bench.paired).
    traffic = [s for s in scenarios if s == "ramp"]
    if traffic:
        phases.append(("traffic", traffic))
    for phase, wanted in phases:
        log(f"{name}: starting ({phase})")
        system: System = cls(workdir / name / phase, server_cpus)
        pool: Pool | None = None
        try:
            system.start()
            pool = Pool(args.workers, loadgen_cpus)
            runner = Runner(system, pool, sizes, loadgen_width, log)
            out[f"rss_at_start_{phase}"] = procstat.snapshot(system.pids()).rss
            if phase == "idle":
                out["idle"] = runner.idle()
            else:
                out["setup"] = runner.setup_chat_topology()
                runner.warmup()
                if "ramp" in wanted:
                    out["ramp"] = runner.ramp()
                out["rss_at_end"] = procstat.snapshot(system.pids()).rss
        except Exception as exc:
            out.setdefault("errors", {})[phase] = f"{exc!r}"
            log(f"{name}: FAILED: {exc!r}\n{traceback.format_exc()}\n{system.logs()[-3000:]}")
        finally:
            if pool is not None:
                pool.close()
            system.stop()
    out["seconds"] = round(time.monotonic() - started, 1)
    log(f"{name}: done in {out['seconds']}s")
    return out


def run_systems(names: list[str], plan: Plan, done: Callable[[str, dict[str, Any]], None]) -> None:
    """The fixed rates of every system together, then each system's other scenarios in turn."""
    paired: dict[str, dict[str, Any]] = {}
    kinds = [s for s in plan.scenarios if s in ("fanout", "one2one")]
    if kinds:
        from bench.paired import paired_fixed

        able = [n for n in names if n != "chat-nopersist" or persistence_switch_supported()]
        began = time.monotonic()
        paired = paired_fixed(
            able,
            kinds,
            plan.args.workers,
            plan.sizes,
            plan.server_cpus,
            plan.loadgen_cpus,
            plan.workdir / "paired",
            log,
        )
        log(f"fixed rates, all systems: done in {time.monotonic() - began:.1f}s")
    for name in names:
        entry = run_system(name, plan)
        extra = paired.get(name, {})
        if "error" in extra:
            entry.setdefault("errors", {})["fixed"] = extra.pop("error")
        extra.pop("setup", None)
        entry.update(extra)
        done(name, entry)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help="comma list")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--idle", type=int, help="idle connections (default 10000, quick 1000)")
    parser.add_argument("--clients", type=int, help="fan-out clients (default 1000)")
    parser.add_argument("--fixed-rate", type=float, help="fan-out messages/s")
    parser.add_argument("--one2one-rate", type=float, help="one-to-one messages/s")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--server-cpus", default="0", help="CPUs for the servers (default 0)")
    parser.add_argument("--loadgen-cpus", default="1", help="CPUs for the load generator")
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--no-install", action="store_true", help="do not install peers")
    parser.add_argument("--no-docs", action="store_true", help="do not render docs/benchmarks.md")
    parser.add_argument("--workdir", type=Path, help="keep servers' data and logs here")
    parser.add_argument("--report", type=Path, help="only render docs from this results file")
    parser.add_argument(
        "--merge",
        type=Path,
        help="re-run --systems and replace their rows in this results file (same sizes)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy this project instead")
    parser.add_argument("--profile-seconds", type=float, default=30)
    parser.add_argument(
        "--profile-system", default="chat", help="chat or chat-nopersist (CHAT_PERSISTENCE=off)"
    )
    parser.add_argument("--profile-rate", type=float, help="fan-out messages/s while profiling")
    args = parser.parse_args()
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every started server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.report:
        from bench.report import render

        render(json.loads(args.report.read_text()))
        return

    sizes = Sizes(**sizes_dict(QUICK if args.quick else FULL))
    if args.idle:
        sizes.idle = args.idle
    if args.clients:
        sizes.clients = args.clients
    if args.fixed_rate:
        sizes.fixed_rate = args.fixed_rate
    if args.one2one_rate:
        sizes.one2one_rate = args.one2one_rate

    available = os.sched_getaffinity(0)
    if args.no_pin or len(available) < 2:
        server_cpus = loadgen_cpus = None
    else:
        server_cpus, loadgen_cpus = parse_cpus(args.server_cpus), parse_cpus(args.loadgen_cpus)
    procstat.raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    if args.profile:
        from bench.profile import profile

        result = profile(args, sizes, server_cpus, loadgen_cpus, log)
        path = RESULTS / f"profile-{args.profile_system}-{stamp}.json"
        path.write_text(json.dumps(result, indent=1))
        log(f"profile written to {path}")
        return

    names = [n for n in args.systems.split(",") if n]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {sorted(SYSTEMS)}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if not args.no_install:
        ensure_peers(names)

    if args.merge:
        results = json.loads(args.merge.read_text())
        sizes = Sizes(**results["sizes"])
        scenarios = results["scenarios"]
        pin = results["pinning"]
        server_cpus = set(pin["server_cpus"]) if pin["server_cpus"] else None
        loadgen_cpus = set(pin["loadgen_cpus"]) if pin["loadgen_cpus"] else None
        args.workers = pin["loadgen_workers"]

        def merged(name: str, entry: dict[str, Any]) -> None:
            entry["rerun"] = stamp
            results["systems"][name] = entry

        with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
            plan = Plan(args, sizes, scenarios, server_cpus, loadgen_cpus, Path(tmp))
            run_systems(names, plan, merged)
        results.setdefault("reruns", []).append({"at": stamp, "systems": names})
        path = args.merge.with_name(args.merge.stem + f"-rerun-{stamp}.json")
        path.write_text(json.dumps(results, indent=1))
        log(f"results written to {path}")
        if not args.no_docs:
            from bench.report import render

            render(results)
        return

    results: dict[str, Any] = {
        "started": stamp,
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "sizes": sizes_dict(sizes),
        "pinning": {
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "loadgen_cpus": sorted(loadgen_cpus) if loadgen_cpus else None,
            "loadgen_workers": args.workers,
        },
        "scenarios": scenarios,
        "systems": {},
    }
    path = RESULTS / f"run-{stamp}{'-quick' if args.quick else ''}.json"
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:

        def finished(name: str, entry: dict[str, Any]) -> None:
            results["systems"][name] = entry
            path.write_text(json.dumps(results, indent=1))

        workdir = args.workdir or Path(tmp)
        plan = Plan(args, sizes, scenarios, server_cpus, loadgen_cpus, workdir)
        run_systems(names, plan, finished)
    results["seconds"] = round(time.monotonic() - began, 1)
    path.write_text(json.dumps(results, indent=1))
    log(f"results written to {path} ({results['seconds']}s)")
    if not args.no_docs:
        from bench.report import render

        render(results)


if __name__ == "__main__":
    main()
