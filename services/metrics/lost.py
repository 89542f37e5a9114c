"""Domain events the stream's cap trimmed before this service read them.

Delivery appends one domain event per batch of messages to a stream capped at
``CHAT_EVENT_STREAM_MAXLEN`` (``MAXLEN ~``), and the cap trims the oldest
entries whether or not the metrics group has read them: a metrics outage
longer than the cap's worth of traffic loses events, and ``chat_messages_total``
and the active-user rollups undercount. Holding them back in delivery would
cost memory per message for an aggregate, so they are not kept, but the loss
is no longer silent: ``events_lost.lua`` finds the gap from the stream's and
the group's counters and moves the group's read counter past it, so it is
counted once across instances (and the group's lag stops showing it as
unread); it becomes ``chat_domain_events_lost_total`` and a warning.
Checked before the consumer starts (a restarted service would otherwise read
past the gap first) and then every refresh interval (a running one fallen
that far behind).
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter
from redis.exceptions import ResponseError

from shared import keys
from shared.cancel import raise_if_cancelled
from shared.logging import get_logger
from shared.redis_client import REDIS_ERRORS, RedisClient
from shared.scripts import run_many
from shared.streams import load_id_script

log = get_logger(__name__)

LOST = Counter(
    "chat_domain_events_lost_total",
    "Domain events trimmed from their stream before the metrics service read them "
    "(message counts and active users miss them)",
)


class LostEvents:
    def __init__(self, redis_client: RedisClient) -> None:
        self.redis = redis_client
        self._script = load_id_script(redis_client, "events_lost")

    async def check(self) -> int:
        """Count what was trimmed unread since the last check; returns it (-1: unknown)."""
        call = ([keys.domain_event_stream()], [keys.METRICS_GROUP])
        try:
            (lost,) = await run_many(self.redis, self._script, [call])
        except (ResponseError, *REDIS_ERRORS) as exc:
            log.warning("lost domain events not checked", error=str(exc))
            return 0
        lost = int(lost)
        if lost > 0:
            LOST.inc(lost)
            log.warning("domain events trimmed before they were counted", count=lost)
        elif lost < 0:
            log.warning("domain events trimmed before they were counted; how many is unknown")
        return lost

    async def run(self, interval: float) -> None:
        while True:
            raise_if_cancelled()
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:
                # Redis errors are handled in check: this is a defect, and the
                # next interval tries again rather than ending the checks.
                log.exception("lost domain events check failed")
