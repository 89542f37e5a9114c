"""Counters and a histogram for per-delivery paths, exported at scrape time.

prometheus_client's ``Counter.inc`` takes a lock and checks the metric each
call, and ``Histogram.observe`` walks its buckets in Python: about 2 µs per
push delivered by the gateway, a tenth of its CPU at saturation. These keep
plain numbers (one ``+=``, a ``bisect`` for a histogram) and hand them to the
registry as metric families when it is scraped: prometheus_client's
documented custom-collector mechanism, with the same names, types, labels
and ``_created`` series as the library's own classes.

Not thread-safe: for a service whose event loop is its only thread (the
gateway, the delivery service), where a scrape runs on the same loop as the
increments.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount

    def observe_many(self, amount: float, count: int) -> None:
        """``count`` observations of the same ``amount``."""
        self.counts[bisect_left(self._bounds, amount)] += count
        self.sum += amount * count


C = TypeVar("C", CounterChild, HistogramChild)


class _Family(Collector, Generic[C]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        self._unlabelled: C | None = self._new_child() if not self.labelnames else None
        (registry if registry is not None else REGISTRY).register(self)

    def _new_child(self) -> C:
        raise NotImplementedError

    def _family(self) -> Metric:
        raise NotImplementedError

    def labels(self, *args: str, **kwargs: str) -> C:
        if args and kwargs:
            raise ValueError("label values by position or by name, not both")
        values = args or tuple(kwargs[name] for name in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _items(self) -> list[tuple[tuple[str, ...], C]]:
        if self._unlabelled is not None:
            return [((), self._unlabelled)]
        return list(self._children.items())

    def describe(self) -> Iterator[Metric]:
        """The family without samples: lets a registry refuse a name registered twice."""
        yield self._family()


class FastCounter(_Family[CounterChild]):
    """Like ``prometheus_client.Counter`` for ``labels(...)`` / ``inc(n)``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def inc(self, amount: float = 1) -> None:
        assert self._unlabelled is not None, "a labelled counter: inc() a child"
        self._unlabelled.inc(amount)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for key, child in self._items():
            family.add_metric(list(key), child.value, created=child.created)
        yield family


class FastHistogram(_Family[HistogramChild]):
    """Like ``prometheus_client.Histogram`` for ``labels(...)`` / ``observe(v)``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def observe(self, amount: float) -> None:
        assert self._unlabelled is not None, "a labelled histogram: observe() on a child"
        self._unlabelled.observe(amount)

    def observe_many(self, amount: float, count: int) -> None:
        assert self._unlabelled is not None, "a labelled histogram: observe_many() on a child"
        self._unlabelled.observe_many(amount, count)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for key, child in self._items():
            cumulative, buckets = 0, []
            for edge, count in zip(edges, child.counts, strict=True):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, child.sum)
            # As the library's Histogram writes it (add_metric takes no created).
            labels = dict(zip(self.labelnames, key, strict=True))
            family.samples.append(Sample(f"{self.name}_created", labels, child.created))
        yield family
