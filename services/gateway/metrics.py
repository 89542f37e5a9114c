"""Prometheus metrics of the gateway (no user ids or other unbounded labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.hotmetrics import FastCounter, FastHistogram
from shared.labels import LabelCache

CONNECTIONS = Gauge("chat_gateway_connections", "Open WebSocket connections on this gateway")
CONNECTS = Counter("chat_gateway_connects_total", "WebSocket upgrades accepted")
AUTH_FAILURES = Counter(
    "chat_gateway_auth_failures_total", "Connection attempts refused", ["reason"]
)
# Per frame received, per push delivered, per reply: plain numbers exported at
# scrape time (see shared/hotmetrics.py).
FRAMES_IN = FastCounter("chat_gateway_frames_in_total", "Client frames received", ["type"])
FRAMES_OUT = FastCounter("chat_gateway_frames_out_total", "Frames written to sockets", ["kind"])
ERRORS = Counter("chat_gateway_errors_total", "Error frames sent to clients", ["code"])
CLOSES = Counter("chat_gateway_closes_total", "Connections closed by the server", ["code"])
SLOW_READER_CLOSES = Counter(
    "chat_gateway_slow_reader_closes_total",
    "Connections closed because their send buffer overflowed",
)
# Read at scrape time from the sockets (see Hub.buffered_bytes), not per frame.
SEND_BUFFER_BYTES = Gauge(
    "chat_gateway_send_buffer_bytes",
    "Bytes written to local sockets that their peers have not read yet",
)
ROUND_TRIP = FastHistogram(
    "chat_gateway_request_round_trip_seconds",
    "Time from a request frame read to its direct reply written",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
END_TO_END = FastHistogram(
    "chat_message_end_to_end_seconds",
    "Time from a send_message accepted by a gateway to the push written by a gateway",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# Frames the gateway writes itself (connected, pong, errors, presence_state).
FRAMES_OUT_DIRECT = FRAMES_OUT.labels(kind="direct")
PUSHES = FastCounter("chat_gateway_pushes_total", "Pushes received from Redis", ["channel"])
# Fewer writes than frames out (kind push, reply, presence) means pushes for
# the same socket were coalesced: the gateway was behind and caught up cheaper.
PUSH_WRITES = FastCounter(
    "chat_gateway_push_writes_total", "Socket writes carrying frames routed from Redis"
)
RELAY_FAILURES = Counter(
    "chat_gateway_relay_failures_total", "Frames that could not be appended to a stream"
)
BACKLOG_REFUSALS = Counter(
    "chat_gateway_backlog_refusals_total",
    "Requests refused because their command stream is at its high-water mark",
)
HELD_CONN_EVENTS = Gauge(
    "chat_gateway_held_connection_events",
    "Connection events held back because their stream is at its high-water mark",
)
RATE_LIMITED = Counter(
    "chat_gateway_rate_limited_total", "Requests refused by a rate limit", ["action"]
)
REDIS_RECONNECTS = Counter(
    "chat_gateway_pubsub_reconnects_total", "Times the pub/sub connection was re-established"
)

# Children used per frame or per reply, by type.
FRAMES_IN_BY_TYPE = LabelCache(FRAMES_IN, "type")
ROUND_TRIP_BY_TYPE = LabelCache(ROUND_TRIP, "type")
