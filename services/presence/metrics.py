"""Prometheus metrics of the presence service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRANSITIONS = Counter("chat_presence_transitions_total", "Presence transitions", ["status"])
EVENTS = Counter("chat_presence_connection_events_total", "Connection events handled", ["kind"])
SWEEPS = Counter("chat_presence_gateway_sweeps_total", "Dead gateways swept")
SWEPT_CONNECTIONS = Counter(
    "chat_presence_swept_connections_total", "Connections removed by gateway sweeps"
)
SWEEP_SECONDS = Histogram(
    "chat_presence_sweep_seconds",
    "Time to sweep one dead gateway",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
)
LAST_SEEN_FAILURES = Counter(
    "chat_presence_last_seen_failures_total", "lastSeen writes to MongoDB that failed"
)
