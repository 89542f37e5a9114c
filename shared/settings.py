"""Settings shared by every service, read from ``CHAT_*`` environment variables.

One class for all four services keeps names and defaults in one place; each
service reads only the fields it needs. Values are validated when the process
starts so a typo fails fast with a message that names the variable.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

import jwt

PREFIX = "CHAT_"

# Variables that are no longer read: set, they would silently do nothing.
RETIRED = {
    "CHAT_SEND_QUEUE_MAX_BYTES": "use CHAT_SEND_BUFFER_MAX_BYTES",
    "CHAT_SEND_QUEUE_MAX_FRAMES": "the bound is CHAT_SEND_BUFFER_MAX_BYTES (bytes, not frames)",
    "CHAT_WS_COMPRESS": "pushes are framed once for every socket and sent uncompressed",
}


class SettingsError(ValueError):
    """A ``CHAT_*`` variable is missing or has a value that cannot be used."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    # --- stores -------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Comma-separated host:port list; when set, Redis Cluster mode is used.
    redis_cluster_nodes: str = ""
    # TLS to Redis: a rediss:// URL (standalone) or this flag (cluster). The
    # files apply to both; a Redis with tls-auth-clients yes (its default)
    # needs the client certificate and key.
    redis_cluster_tls: bool = False
    # Credentials for Redis (ACL user optional), needed for a cluster with
    # AUTH; a standalone URL's own user:password@ wins over them.
    redis_username: str = ""
    redis_password: str = ""
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""
    mongodb_uri: str = "mongodb://127.0.0.1:27017/"
    mongodb_db: str = "chat"
    mongodb_timeout_ms: int = 3000
    # --- process --------------------------------------------------------------
    env: str = "development"
    log_format: str = "auto"  # auto | json | console
    log_level: str = "INFO"
    instance_id: str = ""
    http_host: str = "127.0.0.1"
    gateway_port: int = 8080
    presence_port: int = 8081
    delivery_port: int = 8082
    metrics_port: int = 8083
    # Connections the kernel queues for accept (capped by net.core.somaxconn).
    # aiohttp's default of 128 overflows when clients reconnect together (a
    # gateway restart): a dropped SYN is retried by the client a second later.
    listen_backlog: int = 4096
    # --- auth -----------------------------------------------------------------
    jwt_secret: str = ""
    jwt_public_key: str = ""  # path to a PEM file (RS256/ES256)
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = ""
    jwt_leeway_seconds: int = 10
    dev_mode: bool = False
    admin_token: str = ""
    # --- gateway ----------------------------------------------------------------
    heartbeat_seconds: float = 20.0
    max_frame_bytes: int = 65536
    send_buffer_max_bytes: int = 4 * 1024 * 1024
    drain_seconds: float = 5.0
    gateway_ttl_seconds: int = 15
    max_connections_per_user: int = 20
    idle_timeout_seconds: float = 3600.0
    rate_limits: str = ""  # overrides of the default table, or "off"
    trust_forwarded_for: bool = False
    jwt_jwks_file: str = ""  # JWKS file (RS256/ES256 keys by kid)
    # --- streams / delivery ----------------------------------------------------
    command_partitions: int = 8
    command_stream_maxlen: int = 1_000_000
    event_stream_maxlen: int = 100_000
    # Entries every consumer group is done with are trimmed this often (0:
    # never; the MAXLEN caps above then hold them until a stream is full).
    stream_trim_seconds: float = 5.0
    batch_size: int = 200
    block_ms: int = 1000
    lease_ttl_ms: int = 10_000
    reclaim_idle_ms: int = 30_000
    history_cache_size: int = 100
    offline_queue_max: int = 1000
    offline_queue_retention_seconds: int = 7 * 24 * 3600
    queue_batch_size: int = 100
    # Benchmark-only: skip MongoDB for messages (acks no longer mean durable).
    persistence: bool = True
    # --- metrics service ---------------------------------------------------------
    metrics_refresh_seconds: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), validating each value."""
        env = os.environ if environ is None else environ
        retired = [
            f"{name} is no longer read: {why}" for name, why in RETIRED.items() if name in env
        ]
        if retired:
            raise SettingsError("; ".join(retired))
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            name = PREFIX + field.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(name, raw, hints[field.name])
        settings = cls(**values)
        if not settings.instance_id:
            settings = dataclasses.replace(
                settings, instance_id=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
            )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks; raises SettingsError naming the variable."""
        problems: list[str] = []
        if self.log_format not in ("auto", "json", "console"):
            problems.append("CHAT_LOG_FORMAT must be auto, json or console")
        if self.jwt_algorithm not in ("HS256", "RS256", "ES256"):
            problems.append("CHAT_JWT_ALGORITHM must be HS256, RS256 or ES256")
        if self.jwt_algorithm != "HS256" and not (self.jwt_public_key or self.jwt_jwks_file):
            problems.append(
                f"CHAT_JWT_PUBLIC_KEY or CHAT_JWT_JWKS_FILE is required with {self.jwt_algorithm}"
            )
        for name in (
            "command_partitions",
            "batch_size",
            "max_frame_bytes",
            "offline_queue_max",
            "listen_backlog",
        ):
            if getattr(self, name) < 1:
                problems.append(f"CHAT_{name.upper()} must be at least 1")
        for name in ("gateway_port", "presence_port", "delivery_port", "metrics_port"):
            if not 0 <= getattr(self, name) < 65536:
                problems.append(f"CHAT_{name.upper()} must be a TCP port")
        if self.queue_batch_size > 100 or self.queue_batch_size < 1:
            problems.append("CHAT_QUEUE_BATCH_SIZE must be between 1 and 100")
        problems.extend(self._redis_problems())
        if problems:
            raise SettingsError("; ".join(problems))

    def _redis_problems(self) -> list[str]:
        problems = []
        files = {
            "CHAT_REDIS_TLS_CA_FILE": self.redis_tls_ca_file,
            "CHAT_REDIS_TLS_CERT_FILE": self.redis_tls_cert_file,
            "CHAT_REDIS_TLS_KEY_FILE": self.redis_tls_key_file,
        }
        for name, path in files.items():
            if path and not os.path.isfile(path):
                problems.append(f"{name}: no such file {path!r}")
        if self.redis_username and not self.redis_password:
            problems.append("CHAT_REDIS_USERNAME needs CHAT_REDIS_PASSWORD")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            problems.append("CHAT_REDIS_TLS_CERT_FILE and CHAT_REDIS_TLS_KEY_FILE go together")
        if self.redis_cluster_tls and not self.cluster_mode:
            problems.append(
                "CHAT_REDIS_CLUSTER_TLS needs CHAT_REDIS_CLUSTER_NODES "
                "(standalone Redis: a rediss:// CHAT_REDIS_URL)"
            )
        tls = self.redis_cluster_tls if self.cluster_mode else self.redis_url.startswith("rediss:")
        if any(files.values()) and not tls:
            problems.append(
                "CHAT_REDIS_TLS_* files need TLS: a rediss:// CHAT_REDIS_URL, "
                "or CHAT_REDIS_CLUSTER_TLS with CHAT_REDIS_CLUSTER_NODES"
            )
        return problems

    def redis_options(self) -> dict[str, Any]:
        """Credentials and TLS files as redis-py client options (unset ones left out)."""
        options = {
            "username": self.redis_username,
            "password": self.redis_password,
            "ssl_ca_certs": self.redis_tls_ca_file,
            "ssl_certfile": self.redis_tls_cert_file,
            "ssl_keyfile": self.redis_tls_key_file,
        }
        return {name: value for name, value in options.items() if value}

    def require_jwt(self) -> None:
        """Gateway-only check: a verification key must be configured (and usable)."""
        if self.jwt_algorithm == "HS256" and not self.jwt_secret:
            raise SettingsError("CHAT_JWT_SECRET is required (HS256)")
        if self.jwt_algorithm != "HS256" and self.jwt_public_key and not self.jwt_jwks_file:
            public_key(self.jwt_algorithm, self.jwt_public_key)

    @property
    def cluster_mode(self) -> bool:
        return bool(self.redis_cluster_nodes)


def _parse(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}: {exc}") from None


def public_key(algorithm: str, path: str) -> Any:
    """The verification key in the PEM file at ``path``, parsed for ``algorithm``."""
    try:
        pem = Path(path).read_bytes()
        return jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except (OSError, ValueError, jwt.InvalidKeyError) as exc:
        raise SettingsError(
            f"CHAT_JWT_PUBLIC_KEY={path!r} holds no usable {algorithm} public key: {exc}"
        ) from None
