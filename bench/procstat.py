"""CPU time and memory of processes, read from /proc (Linux only)."""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name may contain spaces: fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


@dataclass
class Snapshot:
    cpu: dict[str, float]
    rss: dict[str, int]

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu.values())

    @property
    def total_rss(self) -> int:
        return sum(self.rss.values())


def snapshot(pids: dict[str, int]) -> Snapshot:
    return Snapshot(
        cpu={name: cpu_seconds(pid) for name, pid in pids.items()},
        rss={name: rss_bytes(pid) for name, pid in pids.items()},
    )


def cpu_delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    return {name: round(after.cpu[name] - before.cpu.get(name, 0.0), 3) for name in after.cpu}


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (threads started later inherit it)."""
    if not cpus:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread may have exited meanwhile
            os.sched_setaffinity(tid, cpus)


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft
