"""How full each capped stream is, so the gateway never has entries trimmed unread.

A command stream is capped (``CHAT_COMMAND_STREAM_MAXLEN``) so that a
delivery outage cannot fill Redis. But the cap trims from the oldest end,
and an entry trimmed before delivery read it is a request nobody answers:
no ``message_ack``, no error, a message dropped in silence. So the gateway
stops appending to a partition well before its cap: it reads every
partition's length each second (XLEN, constant time) and counts what it
appends in between, and a request for a partition at the high-water mark
(nine tenths of the cap) gets ``SERVICE_UNAVAILABLE`` at once. The last
tenth is room for what the other gateways append within one second (a
hundred thousand entries per partition at the default cap), so the cap
itself never removes an entry delivery has not read.

The connection-event stream is watched the same way, but a connection is
not refused for it: its events are held back instead (see ``connevents``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shared import keys
from shared.cancel import raise_if_cancelled
from shared.command_conn import CommandConnection
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.scripts import execute_raw

log = get_logger(__name__)

CHECK_SECONDS = 1.0
HIGH_WATER = 0.9  # of the cap: refuse from here on


class Backlog:
    def __init__(
        self,
        redis_client: RedisClient,
        partitions: int,
        command_cap: int,
        events_cap: int,
        conn: CommandConnection | None = None,
    ) -> None:
        self._redis = redis_client
        self._conn = conn  # standalone Redis: the relay's held connection
        # The command partitions, then the connection-event stream (``events``).
        self._streams = [keys.command_stream(p) for p in range(partitions)]
        self._streams.append(keys.connection_event_stream())
        self.events = partitions
        self._high_water = [int(command_cap * HIGH_WATER)] * partitions
        self._high_water.append(int(events_cap * HIGH_WATER))
        # Per stream: its length at the last check plus what this gateway
        # admitted since.
        self._counted = [0] * len(self._streams)
        self.on_refresh: Callable[[], None] = lambda: None

    def admit(self, index: int) -> bool:
        """Count one append to stream ``index`` (a partition, or ``events``); False
        (nothing counted) when it is full."""
        counted = self._counted[index]
        if counted >= self._high_water[index]:
            return False
        self._counted[index] = counted + 1
        return True

    async def refresh(self) -> None:
        lengths = await execute_raw(
            self._redis, [("XLEN", stream) for stream in self._streams], (), self._conn
        )
        self._counted = [int(length) for length in lengths]
        self.on_refresh()

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.refresh()
            except REDIS_ERRORS as exc:
                # The appends fail too meanwhile; counting goes on from the last check.
                log.warning("stream lengths unavailable", error=str(exc))
            except Exception:
                # A defect (in sending held events, say) must not end the checks:
                # without them the counts only grow, and every partition at its
                # mark refuses requests, and held events wait, for good.
                log.exception("stream length check failed")
