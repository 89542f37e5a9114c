"""Rate limits: one atomic GCRA script per check, limits from configuration.

The default table is the seed's (message:send 60/min, conversation:create 10,
user:search 30, presence:update 10) plus connection, typing, receipt and
history limits. ``CHAT_RATE_LIMITS`` overrides entries
(``message:send=120/60,typing:update=40/60``) or turns limiting off
(``off``, for benchmarks only).

When Redis is unreachable the limiter fails closed: the request could not be
relayed anyway (the command streams live in the same Redis), so the client
gets SERVICE_UNAVAILABLE rather than an unlimited pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from shared import keys
from shared.command_conn import CommandConnection
from shared.redis_client import RedisClient
from shared.scripts import execute_raw, load_script, load_script_with
from shared.settings import Settings, SettingsError

DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "message:send": (60, 60.0),
    "conversation:create": (10, 60.0),
    "user:search": (30, 60.0),
    "presence:update": (10, 60.0),
    "connection:create": (30, 60.0),
    "connection:ip": (120, 60.0),
    "typing:update": (30, 60.0),
    "receipt:send": (120, 60.0),
    "history:fetch": (120, 60.0),
}


@dataclass(frozen=True, slots=True)
class Limit:
    action: str
    count: int
    period: float

    @property
    def interval_us(self) -> int:
        return max(int(self.period * 1_000_000 / self.count), 1)


def parse_limits(spec: str) -> dict[str, Limit] | None:
    """The effective table, or None when limiting is off."""
    if spec.strip().lower() == "off":
        return None
    table = {a: Limit(a, c, p) for a, (c, p) in DEFAULT_LIMITS.items()}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            action, rule = item.split("=", 1)
            count, period = rule.split("/", 1)
            limit = Limit(action.strip(), int(count), float(period))
        except ValueError:
            raise SettingsError(
                f"CHAT_RATE_LIMITS entry {item!r} must look like action=count/seconds"
            ) from None
        if limit.count < 1 or limit.period <= 0:
            raise SettingsError(f"CHAT_RATE_LIMITS entry {item!r} must be positive")
        table[limit.action] = limit
    return table


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_ms: int = 0


ALLOW = Decision(True)


class RateLimiter:
    def __init__(self, redis_client: RedisClient, settings: Settings) -> None:
        self.table = parse_limits(settings.rate_limits)
        self._client = redis_client
        self._script = load_script(redis_client, "rate_limit")
        # The check and a stream append in one call (standalone Redis only).
        self.append_script = load_script_with(redis_client, "limited_append", "check", "rate_limit")

    def limit_for(self, action: str) -> Limit | None:
        return None if self.table is None else self.table.get(action)

    def call_args(self, key: str, limit: Limit) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one check, for callers that pipeline many."""
        return [key], [limit.interval_us, limit.count]

    def check_words(self, key: str, limit: Limit) -> tuple[Any, ...]:
        """One check as its words, for a pipeline of words (``decision_from_reply``)."""
        keys_, args = self.call_args(key, limit)
        return ("EVALSHA", self._script.sha, len(keys_), *keys_, *args)

    def append_words(
        self, key: str, limit: Limit, stream: str, maxlen: int, body: bytes
    ) -> tuple[Any, ...]:
        """One check and, if it allows, the XADD of ``body`` (``limited_append.lua``),
        as its words; the reply is a check's (``decision_from_reply``)."""
        return (
            "EVALSHA", self.append_script.sha, 2, key, stream,
            limit.interval_us, limit.count, maxlen, keys.STREAM_FIELD, body,
        )  # fmt: skip

    @property
    def script(self) -> AsyncScript:
        return self._script

    async def check_user(
        self, user_id: str, action: str, conn: CommandConnection | None = None
    ) -> Decision:
        return await self._check(keys.rate_limit_key(user_id, action), action, conn)

    async def check_ip(
        self, ip: str, action: str, conn: CommandConnection | None = None
    ) -> Decision:
        return await self._check(keys.rate_limit_ip_key(ip, action), action, conn)

    async def _check(self, key: str, action: str, conn: CommandConnection | None) -> Decision:
        """One check; on ``conn`` (a held connection, standalone Redis) rather than a
        round trip through the client's pool and redis-py's script object."""
        limit = self.limit_for(action)
        if limit is None:
            return ALLOW
        (reply,) = await execute_raw(
            self._client, [self.check_words(key, limit)], [self._script], conn
        )
        return decision_from_reply(reply)


def decision_from_reply(reply: list[int]) -> Decision:
    allowed, retry_ms = reply
    return ALLOW if int(allowed) else Decision(False, int(retry_ms))
