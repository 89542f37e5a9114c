"""CPU time and memory of processes, read from /proc (Linux only)."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads, ended ones too), in seconds; 0 when gone.

    This kernel charges them by sampling at its tick (CONFIG_TICK_CPU_ACCOUNTING,
    250 Hz): a process that runs in bursts of a few hundred microseconds is
    charged a whole tick or nothing, so over a step of a few seconds the
    figure is coarse. ``runtime`` is exact; this is its fallback.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name may contain spaces: fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def runtime(pid: int) -> dict[int, int]:
    """Nanoseconds each live thread of ``pid`` has run (the scheduler's own
    account, /proc/PID/task/TID/schedstat); empty when it is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return {}
    threads: dict[int, int] = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                threads[int(tid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return threads


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


@dataclass
class Snapshot:
    cpu: dict[str, float]  # utime + stime (tick-sampled)
    rss: dict[str, int]
    threads: dict[str, dict[int, int]] = field(default_factory=dict)  # name -> tid -> ns run

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
        threads={name: runtime(pid) for name, pid in pids.items()},
    )


def cpu_delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU-seconds each process used between the snapshots.

    From the scheduler's exact per-thread runtimes when every thread seen
    before is still there (threads started meanwhile count from zero);
    otherwise, as a thread's runtime leaves with it, from utime + stime.
    """
    out: dict[str, float] = {}
    for name, cpu in after.cpu.items():
        then, now = before.threads.get(name), after.threads.get(name)
        if then and now and then.keys() <= now.keys():
            used = sum(ns - then.get(tid, 0) for tid, ns in now.items()) / 1e9
        else:
            used = cpu - before.cpu.get(name, 0.0)
        out[name] = round(used, 3)
    return out


@contextlib.contextmanager
def spawning_on(cpus: set[int] | None) -> Iterator[None]:
    """Children started inside inherit ``cpus`` as their CPU affinity."""
    if not cpus:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


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
