"""One sweep over the local connections: heartbeats, dead peers, idle sockets, expired tokens.

A socket whose peer vanished without a FIN (a phone that lost its network, a
NAT that forgot the mapping) looks open forever; pinging it is how the
gateway finds out. aiohttp's own heartbeat keeps a timer per socket, moves it
on every received frame and starts a task per ping. Here one periodic pass
does it for all sockets: a connection silent (no frame of any kind, pongs
included) for a whole interval gets a ping, the same two bytes for every
socket; one that then stays silent for half an interval more is dropped
(1006), as aiohttp would. The same pass closes connections that sent no
request for the idle timeout (1000) and those whose token expired (4001),
so an idle connection owns no timer of its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from services.gateway.hub import Hub
from shared.logging import get_logger
from shared.protocol import CLOSE_NORMAL, CLOSE_TOKEN_EXPIRED

log = get_logger(__name__)

# Token expiry is enforced to within a tick, whatever the heartbeat interval.
MAX_TICK_SECONDS = 1.0


class Swept(NamedTuple):
    pinged: int = 0
    dropped: int = 0
    idle: int = 0
    expired: int = 0


def sweep(hub: Hub, now: float, wall: float, interval: float, idle_seconds: float) -> Swept:
    """One pass at monotonic time ``now`` (``wall``: the same moment as Unix time)."""
    pinged = dropped = idle = expired = 0
    silent_since = now - interval
    pong_deadline = now - interval / 2
    idle_since = now - idle_seconds if idle_seconds > 0 else float("-inf")
    for conn in list(hub.connections.values()):
        if conn.closed:
            continue
        if conn.expires_at <= wall:
            conn.close(CLOSE_TOKEN_EXPIRED, "token expired")
            expired += 1
        elif conn.last_activity < idle_since:
            conn.close(CLOSE_NORMAL, "idle timeout")
            idle += 1
        elif conn.last_received >= conn.pinged_at:  # answered, or none outstanding
            if conn.last_received < silent_since:
                conn.ping(now)
                pinged += 1
        elif conn.pinged_at <= pong_deadline:
            conn.drop()
            dropped += 1
    return Swept(pinged, dropped, idle, expired)


def tick_seconds(interval: float) -> float:
    # At most a quarter interval: pings go out at most 1.25 intervals into a
    # silence, and a dead peer is dropped at most 2 intervals after its last
    # frame. A pass over 10,000 connections costs a few milliseconds.
    return min(interval / 4, MAX_TICK_SECONDS) if interval > 0 else MAX_TICK_SECONDS


async def heartbeat_loop(hub: Hub, interval: float, idle_seconds: float) -> None:
    tick = tick_seconds(interval)
    effective = interval if interval > 0 else float("inf")  # 0: no heartbeat pings
    while True:
        await asyncio.sleep(tick)
        swept = sweep(hub, time.monotonic(), time.time(), effective, idle_seconds)
        if swept.dropped:
            log.info("dropped connections that stopped answering pings", count=swept.dropped)
        if swept.idle:
            log.info("closed idle connections", count=swept.idle)
        if swept.expired:
            log.info("closed connections whose token expired", count=swept.expired)
