"""Prometheus label children resolved once per label value.

``metric.labels(...)`` takes a lock, builds a key tuple and looks the child
up on every call; on a per-frame path that is a measurable share of the
process. Label values here come from closed sets (frame and request types),
so the cache stays small.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

M = TypeVar("M")


class LabelCache(Generic[M]):
    __slots__ = ("_children", "_label", "_metric")

    def __init__(self, metric: M, label: str) -> None:
        self._metric: Any = metric
        self._label = label
        self._children: dict[str, M] = {}

    def __getitem__(self, value: str) -> M:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(**{self._label: value})
        return child
