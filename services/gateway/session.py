"""The connect flow and the life of one WebSocket session.

Connect: token verified before the upgrade; the user channel subscribed
(once per gateway); ``conn_opened`` appended; ``connected`` sent. Then every
frame is validated against the protocol types and either answered here
(ping) or relayed to the command stream of its partition. On close the
connection is forgotten, the channel released and ``conn_closed`` appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import structlog
from aiohttp import WSMsgType, web

from services.gateway import metrics
from services.gateway.admission import admit
from services.gateway.appkeys import CONN_EVENTS, HUB
from services.gateway.connection import Connection
from services.gateway.dispatch import dispatch
from services.gateway.wsframe import pong_frame
from shared import keys
from shared.events import ConnClosed, ConnOpened
from shared.logging import get_logger
from shared.protocol import (
    CLOSE_INTERNAL,
    CLOSE_RESTART,
    CLOSE_UNSUPPORTED,
    Connected,
    encode,
)
from shared.web import DRAINING, SETTINGS

log = get_logger(__name__)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    if app[DRAINING].is_set():
        return web.json_response(
            {"error": "draining", "message": "gateway is restarting; reconnect elsewhere"},
            status=503,
        )
    identity = await admit(request)
    if isinstance(identity, web.Response):
        return identity

    ws = web.WebSocketResponse(
        # Heartbeats are one sweep for all sockets (see heartbeat), so pings
        # and pongs come to the read loop instead of aiohttp's own handling.
        heartbeat=None,
        autoping=False,
        # aiohttp refuses frames of max_msg_size bytes or more; the protocol
        # closes only frames larger than the limit.
        max_msg_size=settings.max_frame_bytes + 1,
        # Off: pushes are framed once for every socket (see wsframe), and
        # compressing per socket would undo that.
        compress=False,
        decode_text=False,
    )
    await ws.prepare(request)
    metrics.CONNECTS.inc()
    hub = app[HUB]
    events = app[CONN_EVENTS]
    conn = Connection(
        ws,
        request.transport,
        connection_id=uuid.uuid4().hex,
        user_id=identity.user_id,
        name=identity.name,
        expires_at=identity.expires_at,
        jti=identity.jti,
        max_bytes=settings.send_buffer_max_bytes,
    )
    structlog.contextvars.bind_contextvars(connectionId=conn.connection_id, userId=conn.user_id)
    user_channel = keys.user_channel(conn.user_id)
    subscribed = False
    registered = False
    try:
        try:
            await hub.acquire(user_channel)
            subscribed = True
        except Exception as exc:
            log.warning("could not subscribe user channel", error=str(exc))
            await ws.close(code=CLOSE_INTERNAL, message=b"backing store unavailable")
            return ws
        hub.add(conn)
        registered = True
        # `connected` is written first: once the event below is in the stream,
        # delivery may push queued_messages at any moment, and the protocol
        # promises `connected` as the first frame.
        conn.send_direct(
            encode(
                Connected(
                    user_id=conn.user_id,
                    connection_id=conn.connection_id,
                    server_time=int(time.time() * 1000),
                    heartbeat_interval_ms=int(settings.heartbeat_seconds * 1000),
                )
            )
        )
        # Wait for the event to be durable (or held while its stream is near
        # its cap, see connevents): presence and offline delivery depend on
        # it, so a gateway that cannot record it ends the session.
        if not await events.append_and_wait(opened_event(hub.gateway_id, conn)):
            conn.close(CLOSE_INTERNAL, "backing store unavailable")
            return ws
        # The token's expiry (4001) is enforced by the heartbeat sweep, from
        # conn.expires_at: the verified claims need not live as long as the
        # socket (this frame does, so drop them: idle memory per connection).
        del identity
        log.info("connected")
        await _read_loop(request.app, ws, conn)
    except Exception:
        # A defect met while serving this socket. Left to aiohttp, which can
        # only drop a socket it has upgraded, the client would see 1006 with
        # no reason, and the error's frames would hold this request in a
        # reference cycle until a full collection. Logged with its traceback
        # here, the client told 1011; the error is freed as the block ends.
        log.exception("session failed")
        conn.close(CLOSE_INTERNAL, "internal error")
    finally:
        await conn.finish()
        if registered:
            hub.remove(conn)
            for watched in list(conn.watching):
                await hub.unwatch(conn, watched)
            closed = ConnClosed(
                gateway_id=hub.gateway_id,
                connection_id=conn.connection_id,
                user_id=conn.user_id,
                at=int(time.time() * 1000),
            )
            events.append(closed)
        if subscribed:
            await hub.release(user_channel)
        log.info("disconnected", code=ws.close_code)
        structlog.contextvars.unbind_contextvars("connectionId", "userId")
        forget_tracebacks(ws.exception())
    return ws


def forget_tracebacks(error: BaseException | None) -> None:
    """Drop the tracebacks of the error a socket ended with (and of its causes).

    aiohttp keeps that error on the response (a close frame written to a
    peer already gone, a lost connection), and its traceback holds the frames
    of ``receive`` and ``close``, which hold the response: a reference cycle
    through the request, the protocol and the transport, some fifty objects
    per socket that only a full collection frees (see shared.gctune). Without
    the tracebacks a closed socket is freed at once by reference counting.
    The error itself stays, for ``ws.exception()``.
    """
    pending = [error]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += (exc.__cause__, exc.__context__)


def opened_event(gateway_id: str, conn: Connection) -> ConnOpened:
    return ConnOpened(
        gateway_id=gateway_id,
        connection_id=conn.connection_id,
        user_id=conn.user_id,
        at=int(time.time() * 1000),
        user_name=conn.name,
    )


async def _read_loop(app: web.Application, ws: web.WebSocketResponse, conn: Connection) -> None:
    clock = time.monotonic
    async for msg in ws:
        if conn.closed:
            break
        conn.last_received = clock()
        if msg.type == WSMsgType.TEXT:
            await dispatch(app, conn, msg.data)
        elif msg.type == WSMsgType.PING:
            conn.write(pong_frame(msg.data))
        elif msg.type == WSMsgType.PONG:
            pass  # its arrival (last_received) is what the heartbeat sweep wanted
        elif msg.type == WSMsgType.BINARY:
            metrics.FRAMES_IN_BY_TYPE["binary"].inc()
            conn.close(CLOSE_UNSUPPORTED, "binary frames are not supported")
            break
        elif msg.type == WSMsgType.ERROR:
            log.info("websocket error", error=str(ws.exception()))
            break


async def drain(app: web.Application) -> None:
    """SIGTERM: stop being ready, then close every socket with 1012 over the window."""
    settings = app[SETTINGS]
    app[DRAINING].set()
    hub = app[HUB]
    conns = list(hub.connections.values())
    if not conns:
        return
    log.info("draining connections", count=len(conns), window=settings.drain_seconds)
    # Spread closes over the window so clients do not all reconnect at once.
    step = settings.drain_seconds / max(len(conns), 1)
    for conn in conns:
        conn.close(CLOSE_RESTART, "server restart")
        if step > 0.0005:
            await asyncio.sleep(step)
    # Give the sockets a moment to finish their closing handshakes.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            await hub.idle.wait()
