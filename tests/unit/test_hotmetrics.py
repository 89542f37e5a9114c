"""The scrape-time counters and histogram expose exactly what prometheus_client's
own Counter and Histogram expose for the same increments (but the _created times)."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.hotmetrics import FastCounter, FastHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _exposition(fast: bool) -> list[str]:
    registry = CollectorRegistry()
    counter, histogram = (FastCounter, FastHistogram) if fast else (Counter, Histogram)
    frames = counter("x_frames_total", "frames", ["kind"], registry=registry)
    plain = counter("x_plain_total", "plain", registry=registry)
    e2e = histogram("x_e2e_seconds", "e2e", buckets=BUCKETS, registry=registry)
    by_type = histogram("x_rt_seconds", "rt", ["type"], buckets=BUCKETS, registry=registry)
    frames.labels(kind="push").inc(3)
    frames.labels("reply").inc()
    frames.labels(kind="push").inc()
    plain.inc(2)
    # On a bound, under the first, over the last, and in between.
    for value in (0.0005, 0.001, 0.003, 0.1, 5, 7.0, 0.0):
        e2e.observe(value)
    # Several observations of one value at once (the gateway's pushes of one pass).
    if fast:
        e2e.observe_many(0.02, 3)
        e2e.observe_many(0.05, 2)
    else:
        for value in (0.02, 0.02, 0.02, 0.05, 0.05):
            e2e.observe(value)
    by_type.labels(type="ping").observe(0.002)
    text = generate_latest(registry).decode()
    return sorted(re.sub(r"^(\S*_created\S*) \S+$", r"\1 T", line) for line in text.splitlines())


def test_same_exposition_as_prometheus_client() -> None:
    assert _exposition(fast=True) == _exposition(fast=False)


def test_label_mistakes_are_refused() -> None:
    registry = CollectorRegistry()
    counter = FastCounter("y_total", "y", ["kind"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels("a", kind="b")
    with pytest.raises(KeyError):
        counter.labels(other="a")
    with pytest.raises(ValueError):
        counter.labels("a", "b")
    with pytest.raises(ValueError):  # the same name twice in one registry
        FastCounter("y_total", "y", ["kind"], registry=registry)
