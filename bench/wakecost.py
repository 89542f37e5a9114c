"""``python -m bench.wakecost``: what the scheduler charges a thread for a sleep.

A process that does nothing but sleep should be charged next to nothing for
it. On the virtual machines this benchmark has run on, the scheduler's own
account (``/proc/PID/task/TID/schedstat``, which the benchmark reads) has
charged a thread milliseconds for waking from a sleep of a second or more,
and the sleep has overrun by as much. Every server process that sleeps with a
timer pays it, so it shows up in each system's background CPU and in its CPU
per delivery at low rates. This measures it for sleeps of several lengths.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time

from bench import procstat

SLEEPS = (3.0, 1.0, 0.1, 0.01)
ROUNDS = 5


def _charged(seconds: float) -> tuple[float, float]:
    """(CPU ms charged to this thread across one sleep, ms the sleep overran)."""
    tid = threading.get_native_id()
    pid = os.getpid()
    before = procstat.runtime(pid)[tid]
    started = time.monotonic()
    time.sleep(seconds)
    overran = time.monotonic() - started - seconds
    return (procstat.runtime(pid)[tid] - before) / 1e6, overran * 1e3


def main() -> None:
    for seconds in SLEEPS:
        rounds = [_charged(seconds) for _ in range(ROUNDS if seconds >= 1 else ROUNDS * 10)]
        charged = [c for c, _ in rounds]
        overran = [o for _, o in rounds]
        sys.stdout.write(
            f"sleep({seconds:g}): charged {statistics.median(charged):.2f} ms "
            f"(min {min(charged):.2f}, max {max(charged):.2f}), "
            f"overran {statistics.median(overran):.2f} ms (max {max(overran):.2f})\n"
        )


if __name__ == "__main__":
    main()
