"""Presence state in Redis, changed only by the atomic scripts in shared/lua.

A user is online while their connection hash is non-empty. Opening the first
connection and closing the last are the transitions; each is reported by
the script that made it, so it is published exactly once per state change
(a redelivered event finds the state already changed and reports nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from shared import keys
from shared.command_conn import CommandConnection
from shared.redis_client import RedisClient
from shared.scripts import execute_raw, load_script, run_calls

TOMBSTONE_TTL_MS = 10 * 60 * 1000
LAST_SEEN_TTL_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Transition:
    user_id: str
    online: bool
    at: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A connection opened (``opened``) or closed on a gateway."""

    user_id: str
    connection_id: str
    gateway_id: str
    opened: bool
    at: int
    # A close by the connection's own event: it is gone for good, and a redone
    # open of it is ignored. False for a sweep of a gateway thought dead, which
    # announces its connections again if it was alive after all.
    for_good: bool = True


class PresenceState:
    def __init__(self, redis_client: RedisClient, conn: CommandConnection | None = None) -> None:
        self.redis = redis_client
        # Standalone Redis: the scripts and registry writes go out on this held
        # connection (a burst of connects is hundreds of changes per batch, and
        # redis-py's pipeline pays a timeout scope per reply).
        self.conn = conn
        self._open = load_script(redis_client, "presence_open")
        self._close = load_script(redis_client, "presence_close")

    async def apply(self, changes: Sequence[Change]) -> list[bool]:
        """Record opens and closes; per change, True when it took its user
        online (an open) or offline (a close).

        One user's changes are applied in their order, different users'
        together: a batch costs two round trips per round (the scripts, then
        the registry writes), and there are as many rounds as the most
        changes of one user in it, not one task and two round trips per
        change. On a cluster the scripts of a round run concurrently, which
        is why a user's next change waits for the next round.
        """
        results: list[bool] = [False] * len(changes)
        for round_ in _rounds(changes):
            calls = [self._call(changes[i]) for i in round_]
            replies = [int(r) for r in await run_calls(self.redis, calls, self.conn)]
            writes: list[tuple[Any, ...]] = []
            for i, reply in zip(round_, replies, strict=True):
                change = changes[i]
                registry = keys.gateway_connections_key(change.gateway_id)
                if change.opened:
                    if reply == -1:  # closed before it was recorded: nothing to add
                        continue
                    writes.append(("HSET", registry, change.connection_id, change.user_id))
                    # Unconditional, so a crash between the script and here
                    # heals on redelivery.
                    writes.append(("SADD", keys.online_users_key(), change.user_id))
                else:
                    writes.append(("HDEL", registry, change.connection_id))
                    if reply in (1, 2):
                        writes.append(("SREM", keys.online_users_key(), change.user_id))
                results[i] = reply == 1
            if writes:
                await execute_raw(self.redis, writes, (), self.conn)
        return results

    def _call(self, change: Change) -> tuple[AsyncScript, list[str], list[Any]]:
        user = change.user_id
        if change.opened:
            return (
                self._open,
                [keys.user_connections_key(user), keys.user_tombstones_key(user)],
                [change.connection_id, change.gateway_id, TOMBSTONE_TTL_MS],
            )
        return (
            self._close,
            [
                keys.user_connections_key(user),
                keys.user_tombstones_key(user),
                keys.user_last_seen_key(user),
            ],
            [
                change.connection_id,
                change.at,
                TOMBSTONE_TTL_MS,
                change.gateway_id,
                LAST_SEEN_TTL_MS,
                "1" if change.for_good else "0",
            ],
        )


def _rounds(changes: Sequence[Change]) -> list[list[int]]:
    """Indexes of ``changes`` by round: the k-th change of every user in round k."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, change in enumerate(changes):
        k = seen.get(change.user_id, 0)
        seen[change.user_id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(i)
    return rounds
