"""On every new connection, hand the user's offline queue to that connection.

Consumed from the connection-event stream with the delivery consumer group,
so an event that arrives while delivery is down is handled when it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.delivery.offline import OfflineQueue
from services.delivery.outbox import Outbox
from shared import keys
from shared.command_conn import CommandConnection
from shared.events import ConnOpened, decode_conn_event
from shared.logging import get_logger
from shared.redis_client import RedisClient
from shared.settings import Settings
from shared.streams import Entry, decode_entries

log = get_logger(__name__)


class ConnectFlow:
    def __init__(
        self,
        redis_client: RedisClient,
        settings: Settings,
        offline: OfflineQueue,
        conn: CommandConnection | None = None,
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.offline = offline
        self.conn = conn  # standalone Redis: the queue reads and replies go out on it

    async def handle(self, entries: Sequence[Entry], recovered: bool) -> None:
        outbox = Outbox(self.redis, self.settings, self.conn)
        stream = keys.connection_event_stream()
        await self.offline.send_batches(
            outbox,
            [
                (event.user_id, event.gateway_id, event.connection_id)
                for _, event in decode_entries(stream, entries, decode_conn_event)
                if isinstance(event, ConnOpened)
            ],
        )
        await outbox.flush()
