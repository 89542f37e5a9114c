"""Local connections and the one pub/sub connection that feeds them.

A channel is subscribed once per gateway however many local connections need
it (reference counts), and unsubscribed when the last one leaves. A push is
written to local sockets as the same bytes for all of them: it arrives
already encoded, and is never decoded here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from services.gateway import metrics
from services.gateway.connection import Connection
from services.gateway.wsframe import text_frame
from shared import keys
from shared.logging import get_logger
from shared.protocol import CLOSE_POLICY
from shared.pubsub import Subscriber, create_subscriber
from shared.push import Push, decode_push
from shared.redis_client import RedisClient

log = get_logger(__name__)

REVOCATIONS = keys.REVOCATIONS.encode()
USER_PREFIX = keys.USER_CHANNEL_PREFIX.encode()
PRESENCE_PREFIX = keys.PRESENCE_CHANNEL_PREFIX.encode()
SYSTEM_PREFIX = keys.SYSTEM_CHANNEL_PREFIX.encode()

# Label children resolved once: these are on the per-push path.
PUSHES_USER = metrics.PUSHES.labels(channel="user")
PUSHES_GATEWAY = metrics.PUSHES.labels(channel="gateway")
PUSHES_PRESENCE = metrics.PUSHES.labels(channel="presence")
PUSHES_SYSTEM = metrics.PUSHES.labels(channel="system")
FRAMES_OUT_PUSH = metrics.FRAMES_OUT.labels(kind="push")
FRAMES_OUT_REPLY = metrics.FRAMES_OUT.labels(kind="reply")
FRAMES_OUT_PRESENCE = metrics.FRAMES_OUT.labels(kind="presence")
FRAMES_OUT_SYSTEM = metrics.FRAMES_OUT.labels(kind="system")


class Hub:
    """Routes pushes from Redis channels to local connections."""

    def __init__(self, redis_client: RedisClient, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[str, dict[str, Connection]] = {}
        self.watchers: dict[str, dict[str, Connection]] = {}
        self.idle = asyncio.Event()  # set while no connection is open
        self.idle.set()
        self._subscriber: Subscriber = create_subscriber(redis_client)
        self._refs: dict[str, int] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._gateway_channel = keys.gateway_channel(gateway_id).encode()
        self.on_resubscribed: Callable[[], None] | None = None
        # Connections with deferred frames, written once the current pass of
        # routing is over (see Connection.defer): one write per socket per pass.
        self._dirty: list[Connection] = []
        self._flush_due = False
        # (data, decoded, framed, its end-to-end timing in this pass)
        self._last_push: tuple[bytes, Push, bytes, list[float] | None] | None = None
        # A pass's user pushes, their frames and their end-to-end timings ([seconds,
        # count] per distinct push), added to the metrics once when the pass ends:
        # per member they were about a sixth of the routing's cost.
        self._pass_pushes = 0
        self._pass_frames = 0
        self._pass_timings: list[list[float]] = []

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await self._subscriber.start(self._route, self._reconnected)
        for channel in (
            keys.gateway_channel(self.gateway_id),
            *keys.SYSTEM_CHANNELS,
            keys.REVOCATIONS,
        ):
            await self.acquire(channel)

    async def stop(self) -> None:
        await self._subscriber.stop()

    def _reconnected(self) -> None:
        metrics.REDIS_RECONNECTS.inc()
        if self.on_resubscribed:
            self.on_resubscribed()

    # --- registry ----------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.connection_id] = conn
        self.by_user.setdefault(conn.user_id, {})[conn.connection_id] = conn
        self.idle.clear()
        metrics.CONNECTIONS.set(len(self.connections))

    def buffered_bytes(self) -> int:
        """Bytes written to local sockets and not yet read by their peers (scrape time)."""
        return sum(conn.buffered() for conn in list(self.connections.values()))

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; True when it was the user's last local connection."""
        self.connections.pop(conn.connection_id, None)
        devices = self.by_user.get(conn.user_id)
        last = False
        if devices is not None:
            devices.pop(conn.connection_id, None)
            if not devices:
                del self.by_user[conn.user_id]
                last = True
        if not self.connections:
            self.idle.set()
        metrics.CONNECTIONS.set(len(self.connections))
        return last

    # --- subscriptions ------------------------------------------------------------

    async def acquire(self, channel: str) -> None:
        """Take a reference on ``channel``; the first one subscribes.

        Returns once the subscription is confirmed by Redis (also for a
        caller that arrives while the first one is still waiting), so no
        push published after this returns can be missed.
        """
        count = self._refs.get(channel, 0)
        self._refs[channel] = count + 1
        if count == 0:
            ready = asyncio.get_running_loop().create_future()
            self._ready[channel] = ready
            try:
                await self._subscriber.subscribe(channel)
            except BaseException as exc:
                self._drop_ref(channel)
                self._ready.pop(channel, None)
                if not ready.done():
                    ready.set_exception(exc)
                    ready.exception()  # retrieved: waiters get it via shield below
                raise
            self._ready.pop(channel, None)
            ready.set_result(None)
            return
        pending = self._ready.get(channel)
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except BaseException:
                self._drop_ref(channel)
                raise

    def _drop_ref(self, channel: str) -> None:
        count = self._refs.get(channel, 0) - 1
        if count <= 0:
            self._refs.pop(channel, None)
        else:
            self._refs[channel] = count

    async def release(self, channel: str) -> None:
        count = self._refs.get(channel, 0)
        if count <= 1:
            self._refs.pop(channel, None)
            await self._subscriber.unsubscribe(channel)
        else:
            self._refs[channel] = count - 1

    # --- routing -------------------------------------------------------------------

    def _send(self, conn: Connection, wire: bytes) -> None:
        if conn.defer(wire):
            self._dirty.append(conn)
            if not self._flush_due:
                self._flush_soon()

    def _flush_soon(self) -> None:
        # Runs after every reply of this read (and of any other read of this
        # loop iteration) is routed, before the loop polls again.
        self._flush_due = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self._count_pass()
        dirty, self._dirty = self._dirty, []
        writes = 0
        for conn in dirty:
            try:
                writes += conn.flush()
            except Exception:
                # One broken socket must not leave the others' frames held.
                log.exception("writing deferred frames failed", connectionId=conn.connection_id)
        metrics.PUSH_WRITES.inc(writes)

    def _count_pass(self) -> None:
        """The pass's user pushes into the metrics (see ``_pass_pushes``)."""
        if self._pass_pushes:
            PUSHES_USER.inc(self._pass_pushes)
            FRAMES_OUT_PUSH.inc(self._pass_frames)
            self._pass_pushes = self._pass_frames = 0
        for seconds, count in self._pass_timings:
            metrics.END_TO_END.observe_many(seconds, int(count))
        self._pass_timings = []
        # Its timing is counted: the same push in a later read is timed anew.
        self._last_push = None

    def _route(self, channel: bytes, data: bytes) -> None:
        if channel.startswith(USER_PREFIX):
            self._pass_pushes += 1
            if not self._flush_due:
                self._flush_soon()
            devices = self.by_user.get(channel[len(USER_PREFIX) :].decode())
            if devices:
                last = self._last_push
                if last is None or last[0] != data:
                    # Decoded, framed and timed once for the members it goes to
                    # next (one PUBLISH per member, all in one read); the members
                    # of one pass are microseconds apart.
                    push = decode_push(data)
                    timing = None
                    if push.accepted_at is not None:
                        timing = [max(time.time() - push.accepted_at, 0.0), 0.0]
                        self._pass_timings.append(timing)
                    last = self._last_push = (data, push, text_frame(push.frame), timing)
                _, push, wire, timing = last
                if timing is not None:
                    timing[1] += 1
                # Routing only defers writes (they happen in _flush), so no
                # connection leaves ``devices`` while it is walked.
                written = 0
                for conn in devices.values():
                    if conn.connection_id != push.connection_id:
                        self._send(conn, wire)
                        written += 1
                    elif push.reply:
                        # The sender's own connection: its message_ack (see shared.push).
                        self._reply(conn, push, push.reply)
                self._pass_frames += written
        elif channel == self._gateway_channel:
            PUSHES_GATEWAY.inc()
            push = decode_push(data)
            target = self.connections.get(push.connection_id)
            if target is not None:
                self._reply(target, push, push.frame)
        elif channel.startswith(PRESENCE_PREFIX):
            PUSHES_PRESENCE.inc()
            watchers = self.watchers.get(channel[len(PRESENCE_PREFIX) :].decode())
            if watchers:
                wire = text_frame(data)
                for conn in list(watchers.values()):
                    self._send(conn, wire)
                FRAMES_OUT_PRESENCE.inc(len(watchers))
        elif channel.startswith(SYSTEM_PREFIX):
            PUSHES_SYSTEM.inc()
            self.broadcast(data)
        elif channel == REVOCATIONS:
            jti = data.decode(errors="replace")
            for conn in [c for c in self.connections.values() if c.jti == jti]:
                log.info("closing connection of a revoked token", connectionId=conn.connection_id)
                conn.close(CLOSE_POLICY, "token revoked")

    def _reply(self, conn: Connection, push: Push, frame: bytes) -> None:
        """A reply to the one connection that sent the request, timed from its acceptance."""
        if push.accepted_at is not None and push.request_type:
            metrics.ROUND_TRIP_BY_TYPE[push.request_type].observe(
                max(time.time() - push.accepted_at, 0.0)
            )
        self._send(conn, text_frame(frame))
        FRAMES_OUT_REPLY.inc()

    def broadcast(self, frame: bytes) -> None:
        """The same bytes to every local connection (system notices, resync)."""
        wire = text_frame(frame)
        for conn in list(self.connections.values()):
            conn.write(wire)
        FRAMES_OUT_SYSTEM.inc(len(self.connections))

    # --- presence watching ---------------------------------------------------------

    async def watch(self, conn: Connection, user_id: str) -> None:
        """Relay ``user_id``'s presence updates to ``conn`` (one subscription per gateway)."""
        if user_id in conn.watching:
            return
        conn.watch(user_id)
        self.watchers.setdefault(user_id, {})[conn.connection_id] = conn
        try:
            await self.acquire(keys.presence_channel(user_id))
        except BaseException:
            self._forget_watch(conn, user_id)
            raise

    async def unwatch(self, conn: Connection, user_id: str) -> None:
        if user_id not in conn.watching:
            return
        self._forget_watch(conn, user_id)
        await self.release(keys.presence_channel(user_id))

    def _forget_watch(self, conn: Connection, user_id: str) -> None:
        conn.unwatch(user_id)
        watchers = self.watchers.get(user_id)
        if watchers is not None:
            watchers.pop(conn.connection_id, None)
            if not watchers:
                del self.watchers[user_id]
