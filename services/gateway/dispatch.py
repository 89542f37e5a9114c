"""Validate one client frame and answer it here or relay it to its service.

The gateway decides nothing about data: it checks the frame's shape, answers
``ping`` itself, serves presence watching from shared presence keys, and
appends every other request to the command stream of the partition that owns
its conversation (or the user, for requests with no conversation).
"""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from services.gateway import metrics
from services.gateway.appkeys import BACKLOG, HUB, LIMITER, RELAY
from services.gateway.backlog import CHECK_SECONDS
from services.gateway.connection import Connection
from services.gateway.relay import RateCheck
from services.gateway.watch import subscribe_presence, unsubscribe_presence
from shared import keys
from shared.events import Command, encode_event
from shared.protocol import (
    RATE_LIMITED,
    SERVICE_UNAVAILABLE,
    ClientFrame,
    FrameError,
    Ping,
    Pong,
    ReadReceipt,
    SubscribePresence,
    UnsubscribePresence,
    decode_client_frame,
    encode,
    error_frame,
)
from shared.redis_client import REDIS_ERRORS
from shared.web import REDIS, SETTINGS


def send_error(
    conn: Connection, code: str, message: str, request_id: str | None = None, **extra: int
) -> None:
    metrics.ERRORS.labels(code=code).inc()
    conn.send_direct(error_frame(code, message, request_id, extra.get("retry_after_ms")))


# Which rate limit a frame counts against; typing and receipts are dropped
# quietly when over it (as the seed does), the others get RATE_LIMITED.
ACTIONS: dict[str, str] = {
    "send_message": "message:send",
    "create_conversation": "conversation:create",
    "subscribe_presence": "presence:update",
    "unsubscribe_presence": "presence:update",
    "typing_indicator": "typing:update",
    "read_receipt": "receipt:send",
    "fetch_history": "history:fetch",
    "list_conversations": "history:fetch",
    "sync": "history:fetch",
}
QUIET_ACTIONS = frozenset({"typing:update", "receipt:send"})


def rate_limited(conn: Connection, action: str, request_id: str | None, retry_ms: int) -> None:
    if action in QUIET_ACTIONS:
        return
    send_error(
        conn,
        RATE_LIMITED,
        f"rate limit for {action} exceeded; retry later",
        request_id,
        retry_after_ms=max(retry_ms, 1),
    )


def routing_key(frame: ClientFrame, user_id: str) -> str:
    """What decides the partition: the conversation when there is one.

    Sends, history and receipts of one conversation land in one partition so
    the owner of that partition can assign its seqs without coordination.
    """
    conversation_id = getattr(frame, "conversation_id", None)
    if isinstance(conversation_id, str):
        return conversation_id
    if isinstance(frame, ReadReceipt) and frame.message_id:
        return frame.message_id
    return user_id


async def dispatch(app: web.Application, conn: Connection, data: bytes) -> None:
    started = time.perf_counter()
    try:
        frame = decode_client_frame(data)
    except FrameError as exc:
        metrics.FRAMES_IN_BY_TYPE["invalid"].inc()
        send_error(conn, exc.code, exc.message, exc.request_id)
        return
    tag = type(frame).__struct_config__.tag
    metrics.FRAMES_IN_BY_TYPE[str(tag)].inc()
    await _handle(app, conn, frame, started)


async def _handle(
    app: web.Application, conn: Connection, frame: ClientFrame, started: float
) -> None:
    # Pings keep a link alive but do not make a forgotten tab active.
    if not isinstance(frame, Ping):
        conn.last_activity = time.monotonic()
    if isinstance(frame, Ping):
        pong = Pong(request_id=frame.request_id, server_time=int(time.time() * 1000))
        conn.send_direct(encode(pong))
        metrics.ROUND_TRIP_BY_TYPE["ping"].observe(time.perf_counter() - started)
        return
    if isinstance(frame, SubscribePresence | UnsubscribePresence):
        # Only the presence paths wait on Redis and may log while handled, so
        # only they bind the request id to the log context: a relayed frame is
        # queued synchronously (a failed append is told to the client later),
        # and binding it there would cost every message a few microseconds.
        if frame.request_id is None:
            await _presence(app, conn, frame, started)
        else:
            with structlog.contextvars.bound_contextvars(requestId=frame.request_id):
                await _presence(app, conn, frame, started)
        return
    relay_command(app, conn, frame)


async def _presence(
    app: web.Application,
    conn: Connection,
    frame: SubscribePresence | UnsubscribePresence,
    started: float,
) -> None:
    try:
        decision = await app[LIMITER].check_user(conn.user_id, "presence:update", app[RELAY].conn)
    except REDIS_ERRORS:
        send_error(conn, SERVICE_UNAVAILABLE, "presence is unavailable; retry", frame.request_id)
        return
    if not decision.allowed:
        metrics.RATE_LIMITED.labels(action="presence:update").inc()
        rate_limited(conn, "presence:update", frame.request_id, decision.retry_after_ms)
        return
    if isinstance(frame, SubscribePresence):
        try:
            await subscribe_presence(app[HUB], app[REDIS], conn, frame, app[RELAY].conn)
        except REDIS_ERRORS:
            send_error(
                conn, SERVICE_UNAVAILABLE, "presence is unavailable; retry", frame.request_id
            )
        metrics.ROUND_TRIP.labels(type="subscribe_presence").observe(time.perf_counter() - started)
        return
    await unsubscribe_presence(app[HUB], conn, frame)


def relay_command(app: web.Application, conn: Connection, frame: ClientFrame) -> None:
    settings = app[SETTINGS]
    partition = keys.command_partition(
        routing_key(frame, conn.user_id), settings.command_partitions
    )
    request_id = getattr(frame, "request_id", None)
    action = ACTIONS.get(str(type(frame).__struct_config__.tag))
    if not app[BACKLOG].admit(partition):
        metrics.BACKLOG_REFUSALS.inc()
        if action not in QUIET_ACTIONS:
            send_error(
                conn,
                SERVICE_UNAVAILABLE,
                "the service is behind; retry later",
                request_id,
                retry_after_ms=int(CHECK_SECONDS * 1000),
            )
        return

    def failed() -> None:
        send_error(conn, SERVICE_UNAVAILABLE, "could not queue the request; retry", request_id)

    check = None
    limit = app[LIMITER].limit_for(action) if action else None
    if action is not None and limit is not None:
        check = RateCheck(
            keys.rate_limit_key(conn.user_id, action),
            limit,
            lambda retry_ms: rate_limited(conn, action, request_id, retry_ms),
        )
    command = Command(
        user_id=conn.user_id,
        connection_id=conn.connection_id,
        gateway_id=app[HUB].gateway_id,
        accepted_at=time.time(),
        frame=frame,
        user_name=conn.name,
        ack_on_user_channel=True,
    )
    app[RELAY].append(
        keys.command_stream(partition),
        encode_event(command),
        settings.command_stream_maxlen,
        failed,
        check,
    )
