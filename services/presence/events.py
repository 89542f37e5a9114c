"""Applies connection events from the stream to presence state, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.presence import metrics
from services.presence.announce import Announcer
from services.presence.state import PresenceState, Transition
from shared import keys
from shared.events import ConnEvent, ConnOpened, decode_conn_event
from shared.logging import get_logger
from shared.redis_client import RedisClient
from shared.streams import Entry, decode_entries

log = get_logger(__name__)


class ConnectionEvents:
    def __init__(
        self, redis_client: RedisClient, state: PresenceState, announcer: Announcer
    ) -> None:
        self.redis = redis_client
        self.state = state
        self.announcer = announcer

    async def handle(self, entries: Sequence[Entry], recovered: bool) -> None:
        stream = keys.connection_event_stream()
        events = [event for _, event in decode_entries(stream, entries, decode_conn_event)]
        # An open from a gateway that is not registered at all (swept as dead,
        # or its entry lost) must not resurrect its connection: if the gateway
        # is alive after all, its next liveness refresh re-creates the entry
        # and it announces every connection again. A gateway whose deadline
        # merely lapsed is still registered: the sweep decides about it.
        alive = await self._alive_gateways({e.gateway_id for e in events})
        # Events of one user are applied in order; different users concurrently,
        # so a batch costs a few round trips, not two per event.
        by_user: dict[str, list[ConnEvent]] = {}
        for event in events:
            by_user.setdefault(event.user_id, []).append(event)
        results = await asyncio.gather(*(self._apply(evs, alive) for evs in by_user.values()))
        await self.announcer.announce([t for found in results for t in found])

    async def _apply(self, events: list[ConnEvent], alive: set[str]) -> list[Transition]:
        transitions: list[Transition] = []
        for event in events:
            if isinstance(event, ConnOpened):
                metrics.EVENTS.labels(kind="open").inc()
                if event.gateway_id not in alive:
                    continue  # no tombstone: a re-announce must be able to open it
                if await self.state.open(event.user_id, event.connection_id, event.gateway_id):
                    transitions.append(Transition(event.user_id, True, event.at, event.user_name))
            else:
                metrics.EVENTS.labels(kind="close").inc()
                if await self.state.close(
                    event.user_id, event.connection_id, event.gateway_id, event.at
                ):
                    transitions.append(Transition(event.user_id, False, event.at))
        return transitions

    async def _alive_gateways(self, gateway_ids: set[str]) -> set[str]:
        """The gateways that are registered (whatever their deadline)."""
        if not gateway_ids:
            return set()
        ordered = sorted(gateway_ids)
        scores = await self.redis.zmscore(keys.gateways_key(), ordered)
        return {g for g, s in zip(ordered, scores, strict=True) if s is not None}
