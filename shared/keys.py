"""Every Redis key, channel and stream name of the system, and nothing else.

One function decides where a name lives and the writer and reader both call
it (the channels_redis lesson). Keys of one user share the hash tag
``{user:<id>}``, keys of one conversation ``{conv:<id>}``, so multi-key
scripts stay in one slot on Redis Cluster. Channel names follow DESIGN.md.
"""

from __future__ import annotations

import zlib

# --- streams (work that must not be lost) -------------------------------------


def command_stream(partition: int) -> str:
    """Command stream of one partition; each partition has its own slot."""
    return f"stream:{{commands:{partition}}}"


def command_partition(routing_key: str, partitions: int) -> int:
    """Partition that owns ``routing_key`` (a conversation or user id).

    crc32 rather than ``hash()`` because it must agree across processes.
    """
    return zlib.crc32(routing_key.encode()) % partitions


def connection_event_stream() -> str:
    """Connection opened/closed events, consumed by presence and delivery."""
    return "stream:{connections}"


def domain_event_stream() -> str:
    """Business events (message sent, conversation created) for metrics."""
    return "stream:{events}"


# Consumer group names.
DELIVERY_GROUP = "delivery"
PRESENCE_GROUP = "presence"
METRICS_GROUP = "metrics"

# Field name that carries the msgpack body of every stream entry.
STREAM_FIELD = b"d"

# --- pub/sub channels ----------------------------------------------------------

# Prefixes shared by the writers (below) and the gateway's router, which
# tells channels apart by them.
USER_CHANNEL_PREFIX = "user:"
PRESENCE_CHANNEL_PREFIX = "presence:"
SYSTEM_CHANNEL_PREFIX = "system:"


def user_channel(user_id: str) -> str:
    """Every device of ``user_id``: messages, receipts, typing, conversations."""
    return USER_CHANNEL_PREFIX + user_id


def gateway_channel(gateway_id: str) -> str:
    """Replies addressed to one connection on one gateway."""
    return f"gateway:{gateway_id}"


def presence_channel(user_id: str) -> str:
    """Presence transitions of one user, for the gateways that watch them."""
    return PRESENCE_CHANNEL_PREFIX + user_id


SYSTEM_NOTIFICATIONS = SYSTEM_CHANNEL_PREFIX + "notifications"
SYSTEM_MAINTENANCE = SYSTEM_CHANNEL_PREFIX + "maintenance"
SYSTEM_CHANNELS = (SYSTEM_NOTIFICATIONS, SYSTEM_MAINTENANCE)

# jti of a revoked token: every gateway closes the connections that used it.
REVOCATIONS = "auth:revocations"


def health_probe_channel(instance_id: str) -> str:
    """Channel used by the deep health check's pub/sub round trip."""
    return f"health:probe:{instance_id}"


# --- keys: users ----------------------------------------------------------------


def user_connections_key(user_id: str) -> str:
    """Hash connectionId -> gatewayId of the user's live connections."""
    return f"presence:{{user:{user_id}}}:conns"


def user_tombstones_key(user_id: str) -> str:
    """Hash connectionId -> closed-at of connections closed before their open was seen."""
    return f"presence:{{user:{user_id}}}:closed"


def online_users_key() -> str:
    """Set of users with at least one live connection (for the online gauge)."""
    return "presence:{online}"


def user_last_seen_key(user_id: str) -> str:
    """Last-seen time (ms) of a user, kept for presence_state reads."""
    return f"presence:{{user:{user_id}}}:lastseen"


def offline_queue_key(user_id: str) -> str:
    """Bounded stream of messages kept for a user with no live connection."""
    return f"queue:{{user:{user_id}}}"


def offline_overflow_key(user_id: str) -> str:
    """Set of conversation ids whose queued messages were trimmed by the cap."""
    return f"queue:{{user:{user_id}}}:overflow"


def offline_ack_floor_key(user_id: str) -> str:
    """Highest offline-queue cursor acknowledged by any device of the user."""
    return f"queue:{{user:{user_id}}}:floor"


def rate_limit_key(user_id: str, action: str) -> str:
    return f"ratelimit:{{user:{user_id}}}:{action}"


def rate_limit_ip_key(ip: str, action: str) -> str:
    return f"ratelimit:{{ip:{ip}}}:{action}"


def revoked_token_key(jti: str) -> str:
    return f"auth:revoked:{jti}"


# --- keys: conversations ------------------------------------------------------------


def recent_messages_key(conversation_id: str) -> str:
    """Sorted set seq -> encoded message: the newest messages of a conversation."""
    return f"recent:{{conv:{conversation_id}}}"


def conversation_head_key(conversation_id: str) -> str:
    """Hash ``seq``, ``at``: a conversation's last seq and when it moved (see
    services/delivery/heads.py; the seq counter itself when persistence is off)."""
    return f"head:{{conv:{conversation_id}}}"


# --- keys: gateways, leases -----------------------------------------------------------


def gateways_key() -> str:
    """Sorted set gatewayId -> liveness deadline (ms)."""
    return "gateways:{alive}"


def gateway_connections_key(gateway_id: str) -> str:
    """Hash connectionId -> userId of one gateway, used to sweep it when it dies."""
    return f"gateway:{{gw:{gateway_id}}}:conns"


def lease_key(resource: str) -> str:
    """Lock/lease on a named resource (a command partition, a gateway sweep)."""
    return f"lease:{{{resource}}}"


def fence_key(resource: str) -> str:
    """Monotonic fencing-token counter of a lease; same slot as the lease."""
    return f"lease:{{{resource}}}:fence"


def partition_resource(partition: int) -> str:
    return f"commands:{partition}"


def delivery_instances_key() -> str:
    """Sorted set delivery instanceId -> liveness deadline (ms), for balancing leases."""
    return "delivery:{instances}"


# --- keys: metrics rollups ------------------------------------------------------------


def offline_depth_key() -> str:
    """Counter of messages waiting in all offline queues (kept by delivery)."""
    return "metrics:{offline}:depth"


def active_users_key(minute: int) -> str:
    """HyperLogLog of users active during one epoch minute.

    All minutes share one hash tag so PFCOUNT can merge a window in one call
    on Redis Cluster too.
    """
    return f"metrics:{{active}}:{minute}"


def health_probe_key(instance_id: str) -> str:
    return f"health:probe:{instance_id}"
