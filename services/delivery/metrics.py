"""Prometheus metrics of the delivery service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.hotmetrics import FastCounter, FastHistogram
from shared.labels import LabelCache

# Per command and per batch: plain numbers exported at scrape time (see shared/hotmetrics.py).
COMMANDS = FastCounter("chat_delivery_commands_total", "Commands handled", ["type"])
COMMANDS_BY_TYPE = LabelCache(COMMANDS, "type")
BATCH_SIZE = FastHistogram(
    "chat_delivery_batch_size",
    "Stream entries handled per batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
PERSIST_SECONDS = Histogram(
    "chat_delivery_persist_seconds",
    "Time to persist one batch of messages in MongoDB",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FANOUT_SIZE = FastHistogram(
    "chat_delivery_fanout_size",
    "Members a message is fanned out to",
    buckets=(1, 2, 3, 5, 10, 20, 50, 100),
)
OFFLINE_ENQUEUED = Counter(
    "chat_delivery_offline_enqueued_total", "Messages kept in offline queues"
)
OFFLINE_OVERFLOWS = Counter(
    "chat_delivery_offline_overflow_total", "Queued messages trimmed by the cap or retention"
)
DUPLICATES = Counter(
    "chat_delivery_duplicate_sends_total", "Sends that matched an already stored message"
)
SEQ_CONFLICTS = Counter(
    "chat_delivery_seq_conflicts_total",
    "Seq counters found out of date (behind the store, or with persistence off moved by "
    "another owner) and read again",
)
RECLAIMED = Counter(
    "chat_delivery_reclaimed_entries_total", "Stream entries taken over from another consumer"
)
ERRORS = Counter("chat_delivery_errors_total", "Error replies sent", ["code"])
PARTITIONS_OWNED = Gauge("chat_delivery_partitions_owned", "Command partitions this instance owns")
HISTORY_CACHE = Counter(
    "chat_delivery_history_cache_total", "History reads by where they were served", ["source"]
)
