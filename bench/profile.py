"""``python -m bench --profile``: py-spy on this project's gateway and delivery under fan-out.

Starts the project (same configuration as the benchmark), sets up the fan-out
topology, then sends at ``--profile-rate`` (default: the fixed fan-out rate)
while ``py-spy record --nonblocking`` samples the gateway, delivery and
metrics processes for ``--profile-seconds``. The collapsed stacks are kept under
bench/results/ and summarised per function: *self* (the function was the
leaf: time spent in its own code) and *total* (it was anywhere on the stack),
both as a share of the process's busy samples (py-spy drops idle samples).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procstat
from bench.loadgen import Pool
from bench.scenarios import Runner, Sizes
from bench.systems import ROOT, SYSTEMS

RATE = 200  # py-spy samples per second
_LINE = re.compile(r":\d+\)$")
# Frames under which every sample of a service sits (uvloop's run loop): left
# out of the "total" ranking, where they would always be at the top.
PROFILED = ("gateway", "delivery", "metrics")
ROOT_FRAMES = {"<module>", "_run_code", "_run_module_as_main", "run_service", "run_app"}


def py_spy() -> str:
    found = shutil.which("py-spy")
    if found:
        return found
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("py-spy not found: run with `uv run --with py-spy` (bench dependency group)")


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: one row per function."""
    frame = _LINE.sub(")", frame.strip())
    match = re.match(r"(.*) \((.*)\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def summarise(collapsed: str, top: int = 20) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        # py-spy puts the thread ("process 123:...", "thread (0x...)") first.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            if name.split(" (")[0] not in ROOT_FRAMES:
                total_counts[name] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / samples, 1)}
            for name, n in counter.most_common(top)
        ]

    return {"samples": samples, "self": rows(self_counts), "total": rows(total_counts)}


def profile(
    args: argparse.Namespace,
    sizes: Sizes,
    server_cpus: set[int] | None,
    loadgen_cpus: set[int] | None,
    log: Any,
) -> dict[str, Any]:
    if args.profile_system not in ("chat", "chat-nopersist"):
        raise SystemExit("--profile-system must be chat or chat-nopersist")
    spy = py_spy()
    rate = args.profile_rate or sizes.fixed_rate
    seconds = args.profile_seconds
    out: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "sizes": sizes.__dict__,
        "server_cpus": sorted(server_cpus) if server_cpus else None,
    }
    with tempfile.TemporaryDirectory(prefix="chat-bench-profile-") as tmp:
        workdir = Path(args.workdir or tmp)
        system = SYSTEMS[args.profile_system](workdir / "profile", server_cpus)
        out["system"] = args.profile_system
        pool: Pool | None = None
        try:
            system.start()
            pool = Pool(args.workers, loadgen_cpus)
            runner = Runner(system, pool, sizes, len(loadgen_cpus or {0}), log)
            runner.setup_chat_topology()
            runner.warmup()
            pids = system.pids()
            results_dir = ROOT / "bench" / "results"
            results_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            spies = {}
            for name in PROFILED:
                path = results_dir / f"pyspy-{name}-{stamp}.txt"
                argv = [
                    spy, "record", "--pid", str(pids[name]), "--duration", str(int(seconds)),
                    "--rate", str(RATE), "--format", "raw", "--output", str(path), "--nonblocking",
                ]  # fmt: skip
                spies[name] = (
                    subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
                    path,
                )
                if loadgen_cpus:
                    procstat.pin(spies[name][0].pid, loadgen_cpus)
            load = runner.load(
                rate, seconds, runner.fanout_senders, f"fan-out {rate:g}/s (profiled)"
            )
            for name, (proc, path) in spies.items():
                output, _ = proc.communicate(timeout=seconds + 60)
                if proc.returncode != 0 or not path.exists():
                    raise RuntimeError(
                        f"py-spy {name} failed: {output.decode(errors='replace')[-800:]}"
                    )
                summary = summarise(path.read_text())
                summary["busy_share"] = round(summary["samples"] / (RATE * seconds), 3)
                summary["file"] = str(path.relative_to(ROOT))
                out[name] = summary
            out["load"] = {k: v for k, v in load.items() if k not in ("server_rss",)}
        finally:
            if pool is not None:
                pool.close()
            system.stop()
    for name in PROFILED:
        summary = out.get(name)
        if not summary:
            continue
        log(f"{name}: {summary['samples']} samples, busy {summary['busy_share']:.0%} of the time")
        for row in summary["self"][:12]:
            log(f"  self {row['percent']:5.1f}%  {row['function']}")
        for row in summary["total"][:12]:
            log(f"  total {row['percent']:5.1f}%  {row['function']}")
    cpu = out.get("load", {}).get("server_cpu")
    if cpu:
        log(f"server CPU seconds by process during the profiled load: {cpu}")
    return out
