"""Applies connection events from the stream to presence state, in order."""

from __future__ import annotations

from collections.abc import Sequence

from services.presence import metrics
from services.presence.announce import Announcer
from services.presence.state import Change, PresenceState, Transition
from shared import keys
from shared.events import ConnOpened, decode_conn_event
from shared.logging import get_logger
from shared.redis_client import RedisClient
from shared.scripts import execute_raw
from shared.streams import Entry, decode_entries

log = get_logger(__name__)


class ConnectionEvents:
    def __init__(
        self, redis_client: RedisClient, state: PresenceState, announcer: Announcer
    ) -> None:
        self.redis = redis_client
        self.state = state
        self.announcer = announcer
        self.conn = state.conn

    async def handle(self, entries: Sequence[Entry], recovered: bool) -> None:
        stream = keys.connection_event_stream()
        events = [event for _, event in decode_entries(stream, entries, decode_conn_event)]
        # An open from a gateway that is not registered at all (swept as dead,
        # or its entry lost) must not resurrect its connection: if the gateway
        # is alive after all, its next liveness refresh re-creates the entry
        # and it announces every connection again. A gateway whose deadline
        # merely lapsed is still registered: the sweep decides about it.
        alive = await self._alive_gateways({e.gateway_id for e in events})
        # An open from a dead gateway leaves no tombstone: a re-announce must
        # be able to open it.
        kept = [e for e in events if not isinstance(e, ConnOpened) or e.gateway_id in alive]
        opens = sum(isinstance(e, ConnOpened) for e in events)
        metrics.EVENTS.labels(kind="open").inc(opens)
        metrics.EVENTS.labels(kind="close").inc(len(events) - opens)
        changes = [
            Change(e.user_id, e.connection_id, e.gateway_id, isinstance(e, ConnOpened), e.at)
            for e in kept
        ]
        made = await self.state.apply(changes)
        await self.announcer.announce(
            [
                Transition(
                    e.user_id,
                    isinstance(e, ConnOpened),
                    e.at,
                    e.user_name if isinstance(e, ConnOpened) else None,
                )
                for e, transition in zip(kept, made, strict=True)
                if transition
            ]
        )

    async def _alive_gateways(self, gateway_ids: set[str]) -> set[str]:
        """The gateways that are registered (whatever their deadline)."""
        if not gateway_ids:
            return set()
        ordered = sorted(gateway_ids)
        (scores,) = await execute_raw(
            self.redis, [("ZMSCORE", keys.gateways_key(), *ordered)], (), self.conn
        )
        return {g for g, s in zip(ordered, scores, strict=True) if s is not None}
