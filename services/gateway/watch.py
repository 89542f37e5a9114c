"""subscribe_presence / unsubscribe_presence, served by the gateway itself.

The state is read from the presence service's shared keys (a user is online
while their connection hash is non-empty); later transitions arrive on
``presence:<user>`` channels, subscribed once per gateway.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.gateway.connection import Connection
from services.gateway.hub import Hub
from shared import keys
from shared.command_conn import CommandConnection
from shared.protocol import (
    INVALID_MESSAGE,
    MAX_PRESENCE_WATCH,
    PresenceState,
    PresenceStatus,
    SubscribePresence,
    UnsubscribePresence,
    encode,
    error_frame,
)
from shared.redis_client import RedisClient
from shared.scripts import execute_raw


async def read_presence(
    redis_client: RedisClient, user_ids: list[str], held: CommandConnection | None = None
) -> dict[str, PresenceStatus]:
    """Current status of each user, in one pipelined round trip (on ``held``, the
    gateway's held connection, on standalone Redis)."""
    commands: list[tuple[Any, ...]] = []
    for user_id in user_ids:
        commands.append(("HLEN", keys.user_connections_key(user_id)))
        commands.append(("GET", keys.user_last_seen_key(user_id)))
    replies = await execute_raw(redis_client, commands, (), held)
    state: dict[str, PresenceStatus] = {}
    for index, user_id in enumerate(user_ids):
        live, last_seen = replies[2 * index], replies[2 * index + 1]
        if live:
            state[user_id] = PresenceStatus(status="online")
        else:
            state[user_id] = PresenceStatus(
                status="offline", last_seen=int(last_seen) if last_seen else None
            )
    return state


async def subscribe_presence(
    hub: Hub,
    redis_client: RedisClient,
    conn: Connection,
    frame: SubscribePresence,
    held: CommandConnection | None = None,
) -> None:
    wanted = list(dict.fromkeys(frame.user_ids))
    new = [user_id for user_id in wanted if user_id not in conn.watching]
    if len(conn.watching) + len(new) > MAX_PRESENCE_WATCH:
        conn.send_direct(
            error_frame(
                INVALID_MESSAGE,
                f"a connection may watch at most {MAX_PRESENCE_WATCH} users",
                frame.request_id,
            )
        )
        return
    # Subscribe before reading, so a transition between the two is not missed.
    # All at once: the SUBSCRIBEs of one pass go out as one write and are
    # confirmed together, where one after the other cost a round trip each
    # (up to MAX_PRESENCE_WATCH of them). A failed watch is forgotten; the
    # first failure is raised once every watch has settled.
    outcomes = await asyncio.gather(
        *(hub.watch(conn, user_id) for user_id in new), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    state = await read_presence(redis_client, wanted, held)
    conn.send_direct(encode(PresenceState(users=state, request_id=frame.request_id)))


async def unsubscribe_presence(hub: Hub, conn: Connection, frame: UnsubscribePresence) -> None:
    for user_id in frame.user_ids:
        await hub.unwatch(conn, user_id)
