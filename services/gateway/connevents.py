"""Connection events, held back while their stream is near its cap.

Presence and delivery read ``conn_opened`` and ``conn_closed`` from one
capped stream (``CHAT_EVENT_STREAM_MAXLEN``). During a long presence or
delivery outage it fills up, and the cap trims from the oldest end, read or
not: a trimmed open leaves a connected user shown offline and their offline
queue undrained; a trimmed close leaves a user online for good. Refusing
connections instead would turn a presence outage into a connect outage.

So from the stream's high-water mark on (``backlog``), this gateway keeps
its connection events in memory, at most one per connection: an open and a
later close of the same connection cancel out (nobody needs to hear of a
connection that came and went unseen), and the close of a connection
presence knows of is kept. After each length check the held events go out
oldest first, as many as the stream has room for; new events queue behind
them, so each connection's events still arrive in order. What is held is
bounded by this gateway's connections: live ones whose open is held, and
closed ones that were live when holding began.

A gateway that stops while still holding events does not retire its
liveness entry (see ``app``): presence sweeps it once the entry lapses and
closes every connection it knew of there, which is the truth by then.
"""

from __future__ import annotations

from collections import OrderedDict

from services.gateway.backlog import Backlog
from services.gateway.relay import StreamRelay
from shared import keys
from shared.events import ConnClosed, ConnEvent, ConnOpened, encode_event
from shared.logging import get_logger

log = get_logger(__name__)


class ConnectionEvents:
    def __init__(self, relay: StreamRelay, backlog: Backlog, maxlen: int) -> None:
        self._relay = relay
        self._backlog = backlog
        self._maxlen = maxlen
        self._stream = keys.connection_event_stream()
        # Connection id -> the one event owed for it, oldest first.
        self._held: OrderedDict[str, ConnEvent] = OrderedDict()
        # Since the stream was last found full; the held events may all have
        # cancelled out meanwhile.
        self._holding = False

    def __len__(self) -> int:
        return len(self._held)

    def append(self, event: ConnEvent) -> None:
        """Append ``event`` (a failed append is counted by the relay), or hold it."""
        if self._admit():
            self._send(event)
        else:
            self._hold(event)

    async def append_and_wait(self, event: ConnOpened) -> bool:
        """Append ``event`` and wait until it is written (True) or failed (False).

        A held event is True at once: it is not lost but owed, and goes out
        before anything this gateway appends after it.
        """
        if self._admit():
            return await self._relay.append_and_wait(
                self._stream, encode_event(event), self._maxlen
            )
        self._hold(event)
        return True

    def flush(self) -> None:
        """Send what the stream has room for now (after each length check)."""
        held = self._held
        if not held:
            return
        while held and self._backlog.admit(self._backlog.events):
            self._send(held.popitem(last=False)[1])
        if not held:
            self._holding = False
            log.info("held connection events sent")

    def _send(self, event: ConnEvent) -> None:
        self._relay.append(self._stream, encode_event(event), self._maxlen)

    def _admit(self) -> bool:
        # Nothing may overtake a held event: once holding, everything is held.
        if self._held or not self._backlog.admit(self._backlog.events):
            return False
        self._holding = False
        return True

    def _hold(self, event: ConnEvent) -> None:
        held = self._held
        if not self._holding:
            self._holding = True
            log.warning("connection events held back: their stream is near its cap")
        cid = event.connection_id
        if isinstance(event, ConnClosed) and isinstance(held.get(cid), ConnOpened):
            del held[cid]  # opened and closed unseen: neither is owed
        else:
            held[cid] = event
