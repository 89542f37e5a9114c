"""The bench's CPU accounting: exact per-thread runtimes, and utime + stime
when a thread ended between two snapshots (its runtime left with it)."""

from __future__ import annotations

import os
import threading
import time

from bench import procstat


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_short_bursts_are_counted_exactly() -> None:
    """Tick-sampled utime + stime (250 Hz here) would give 0 or 4 ms multiples."""
    pids = {"me": os.getpid()}
    for burst in (0.0015, 0.003, 0.0065):
        before, started = procstat.snapshot(pids), time.process_time()
        _spin(burst)
        used = time.process_time() - started
        delta = procstat.cpu_delta(before, procstat.snapshot(pids))["me"]
        assert abs(delta - used) < 0.001, (burst, delta, used)


def test_a_thread_that_ended_is_still_counted() -> None:
    pids = {"me": os.getpid()}
    go = threading.Event()
    worker = threading.Thread(target=lambda: (go.wait(), _spin(0.2)))
    worker.start()
    before = procstat.snapshot(pids)
    go.set()
    worker.join()
    delta = procstat.cpu_delta(before, procstat.snapshot(pids))["me"]
    assert delta >= 0.15  # the worker's 0.2 s, from utime + stime


def test_a_process_gone_counts_nothing_more() -> None:
    before = procstat.snapshot({"gone": 2**22 + 1})
    assert procstat.cpu_delta(before, procstat.snapshot({"gone": 2**22 + 1})) == {"gone": 0.0}
