"""One Redis connection in subscribed mode, read without an await per push.

The gateway's hot path is "a push arrives on a channel, write it to local
sockets". redis-py's ``PubSub.get_message`` costs a task-level round trip,
a timeout scope, retry wrappers and a dict per message; here replies are
parsed by hiredis straight from ``data_received`` and every push of a TCP read
is routed in one synchronous pass. Only the subscribed mode is spoken: AUTH,
(S)SUBSCRIBE, (S)UNSUBSCRIBE and PING, all fire-and-forget writes whose
answers come back as push replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
from redis.asyncio.connection import SSLConnection

from shared.logging import get_logger

log = get_logger(__name__)

OnMessage = Callable[[bytes, bytes], None]
ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)
OnEvent = Callable[[], None]

CONNECT_TIMEOUT = 2.0
CONFIRM_TIMEOUT = 5.0
HEALTH_INTERVAL = 10.0  # a PING this often; no answer within two intervals is a dead link
# hiredis moves the unread rest of its buffer to the front after each reply
# once a KiB of it is consumed, so one big read fed whole costs the square of
# its size: a 256 KiB read of pushes (what a busy gateway gets when it falls
# behind) parsed three times slower than fed in slices of this size.
FEED_SLICE = 8192


def encode_command(*args: bytes | str | int | float) -> bytes:
    """RESP array of bulk strings (hiredis packs it in C; numbers as redis-py writes them)."""
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub says a 1-tuple


class Endpoint:
    """Where and how to connect: what a redis-py client was configured with."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        *,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.username = username
        self.password = password
        self.ssl_context = ssl_context

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], **override: Any) -> Endpoint:
        """The endpoint of a redis-py pool's (or cluster's) connection kwargs.

        ``connection_class`` is redis-py's: for ``rediss://`` its SSLConnection.
        The TLS context is then built by that class from the same ``ssl_*``
        options (CA, client certificate and key, hostname check, minimum
        version), so a held connection verifies and presents exactly what the
        client's own connections do: a Redis that requires client certificates
        (its default) accepts both or neither.
        """
        options = {**kwargs, **override}
        connection_class = options.pop("connection_class", None)
        context = None
        if isinstance(connection_class, type) and issubclass(connection_class, SSLConnection):
            ssl_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
            context = connection_class(**ssl_options).ssl_context.get()
        return cls(
            host=str(options.get("host") or "127.0.0.1"),
            port=int(options.get("port") or 6379),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            ssl_context=context,
        )

    async def open(self, factory: Callable[[], ProtocolT]) -> tuple[asyncio.Transport, ProtocolT]:
        """Connect (TCP, TLS or a Unix socket) within CONNECT_TIMEOUT."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT):
            if self.path:
                return await loop.create_unix_connection(factory, self.path)
            return await loop.create_connection(
                factory,
                self.host,
                self.port,
                ssl=self.ssl_context,
                server_hostname=self.host if self.ssl_context else None,
            )


class ReplyReader(asyncio.Protocol):
    """Replies parsed by hiredis in ``data_received``, each handed to ``on_reply`` at once."""

    def __init__(
        self,
        on_reply: Callable[[Any], None],
        on_protocol_error: Callable[[ReplyReader, Exception], None],
        on_lost: Callable[[ReplyReader, Exception | None], None],
        reader: hiredis.Reader | None = None,
    ) -> None:
        self._on_reply = on_reply
        self._on_protocol_error = on_protocol_error
        self._on_lost = on_lost
        self._reader = reader or hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def write(self, data: bytes) -> None:
        """Send ``data`` once this pass of the event loop is over, with whatever else is
        written here in the same pass: one write, one wake-up of Redis.

        Callers in one pass are independent tasks (a burst of reconnecting
        clients, each with its admission check and SUBSCRIBE); one write each
        cost a system call and a wake-up of Redis apiece. The order of writes
        is kept, so replies still come back in the order they were asked.
        """
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._write_unsent)
        self._unsent.append(data)

    def _write_unsent(self) -> None:
        unsent, self._unsent = self._unsent, []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        on_reply = self._on_reply
        size = len(data)
        try:
            for offset in range(0, size, FEED_SLICE):
                reader.feed(data, offset, min(FEED_SLICE, size - offset))
                reply = reader.gets()
                while reply is not False:
                    on_reply(reply)
                    reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._on_protocol_error(self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(self, exc)


class PubSubConnection:
    """Subscriptions of one process on one Redis node.

    ``sharded`` speaks SSUBSCRIBE (Redis Cluster). With ``reconnect`` the
    connection re-establishes itself and its subscriptions after a loss and
    then calls ``on_reconnect`` (pushes sent meanwhile are gone); without it,
    ``on_lost`` is called once and the owner decides (a cluster subscriber
    looks up the slot's new owner). ``on_moved`` gets a channel whose
    subscription the server dropped (its slot moved to another shard).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        on_message: OnMessage,
        *,
        sharded: bool = False,
        reconnect: bool = True,
        on_reconnect: OnEvent | None = None,
        on_lost: OnEvent | None = None,
        on_moved: Callable[[bytes], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.channels: set[bytes] = set()
        self._on_message = on_message
        self._sub, self._unsub = (
            (b"SSUBSCRIBE", b"SUNSUBSCRIBE")
            if sharded
            else (
                b"SUBSCRIBE",
                b"UNSUBSCRIBE",
            )
        )
        self._sub_kind = b"ssubscribe" if sharded else b"subscribe"
        self._unsub_kind = b"sunsubscribe" if sharded else b"unsubscribe"
        self._reconnect = reconnect
        self._on_reconnect = on_reconnect or (lambda: None)
        self._on_lost = on_lost or (lambda: None)
        self._on_moved = on_moved
        self._transport: asyncio.Transport | None = None
        self._reader: ReplyReader | None = None  # the protocol of ``_transport``
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._unsubscribing: dict[bytes, int] = {}  # our own unsubscribes not yet answered
        self._closing = False
        self._last_pong = 0.0
        self._restoring: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    # --- life cycle --------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection (raising if Redis is unreachable) and start health checks."""
        await self._open()
        if self._health is None:
            self._health = asyncio.create_task(self._check_health(), name="pubsub-health")

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        transport, reader = await endpoint.open(
            lambda: ReplyReader(self.on_reply, self._protocol_error, self._reader_lost)
        )
        self._transport = transport
        self._reader = reader
        self._last_pong = loop.time()
        head = b""
        if endpoint.password:
            auth = (
                (endpoint.username, endpoint.password)
                if endpoint.username
                else (endpoint.password,)
            )
            head = encode_command(b"AUTH", *auth)
        if self.channels:
            head += encode_command(self._sub, *sorted(self.channels))
        if head:
            transport.write(head)

    async def close(self) -> None:
        self._closing = True
        for task in (self._health, self._restoring):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("pub/sub connection closed"))
        self._pending.clear()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- subscriptions -------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Subscribe and return once Redis confirmed it; raises if it cannot."""
        name = channel.encode()
        if not self.connected:
            raise ConnectionError("pub/sub connection is down")
        future = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        self.channels.add(name)
        self._write(encode_command(self._sub, name))
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await asyncio.shield(future)
        except BaseException:
            self.unsubscribe(channel)
            raise
        finally:
            if self._pending.get(name) is future:
                del self._pending[name]

    def unsubscribe(self, channel: str) -> None:
        name = channel.encode()
        if name in self.channels:
            self.channels.discard(name)
            if self.connected:
                self._unsubscribing[name] = self._unsubscribing.get(name, 0) + 1
                self._write(encode_command(self._unsub, name))

    def _write(self, data: bytes) -> None:
        if self.connected:
            assert self._reader is not None
            self._reader.write(data)

    # --- replies -------------------------------------------------------------------------

    def on_reply(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind, channel, data = reply
            if kind == b"message" or kind == b"smessage":
                try:
                    self._on_message(channel, data)
                except Exception:
                    log.exception("push routing failed")
            elif kind == self._sub_kind:
                future = self._pending.get(channel)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind == self._unsub_kind:
                self._unsubscribed(channel)
            return
        if isinstance(reply, list) and reply and reply[0] == b"pong":
            self._last_pong = asyncio.get_running_loop().time()
            return
        if isinstance(reply, hiredis.ReplyError):
            log.error("redis refused a pub/sub command", error=str(reply))
            if "NOAUTH" in str(reply) or "WRONGPASS" in str(reply):
                self.abort()
            return
        # b"OK" answers AUTH; nothing else is expected in subscribed mode.

    def _unsubscribed(self, channel: bytes) -> None:
        expected = self._unsubscribing.get(channel, 0)
        if expected > 1:
            self._unsubscribing[channel] = expected - 1
        elif expected == 1:
            del self._unsubscribing[channel]
        elif channel in self.channels and self._on_moved is not None:
            # Not asked for: the server dropped it (its slot moved).
            self.channels.discard(channel)
            self._on_moved(channel)

    def _protocol_error(self, _reader: ReplyReader, exc: Exception) -> None:
        log.error("redis protocol error on the pub/sub connection", error=str(exc))
        self.abort()

    def _reader_lost(self, reader: ReplyReader, exc: Exception | None) -> None:
        self.on_lost(reader.transport, exc)

    def on_lost(self, transport: asyncio.BaseTransport | None, exc: Exception | None) -> None:
        if transport is not self._transport:
            return  # an earlier connection, already given up by a restore attempt
        self._transport = None
        self._unsubscribing.clear()  # a new connection starts with only what is wanted
        if self._closing:
            return
        log.warning("pub/sub connection lost", error=str(exc) if exc else "closed by peer")
        if self._reconnect:
            if self._restoring is None or self._restoring.done():
                self._restoring = asyncio.get_running_loop().create_task(
                    self._restore(), name="pubsub-restore"
                )
        else:
            self._on_lost()

    async def _restore(self) -> None:
        """Reconnect with back-off, resubscribe everything, then tell the owner."""
        delay = 0.05
        loop = asyncio.get_running_loop()
        while not self._closing:
            # A subscribe() still waiting keeps its future: the resubscription confirms it.
            waiting = {
                name: self._pending.get(name) or loop.create_future() for name in self.channels
            }
            self._pending.update(waiting)
            try:
                await self._open()
                if waiting:
                    async with asyncio.timeout(CONFIRM_TIMEOUT):
                        await asyncio.gather(*waiting.values())
                log.info("pub/sub reconnected; subscriptions restored", channels=len(waiting))
                self._on_reconnect()
                return
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("pub/sub reconnect failed; retrying", error=str(exc))
                self.abort()  # its connection_lost finds this restore running
                self._transport = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                for name, future in waiting.items():
                    if self._pending.get(name) is future:
                        del self._pending[name]

    async def _check_health(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(HEALTH_INTERVAL)
            if not self.connected:
                continue
            if loop.time() - self._last_pong > 2 * HEALTH_INTERVAL + 1:
                log.warning("pub/sub connection unresponsive; reconnecting")
                self.abort()
                continue
            self._write(encode_command(b"PING"))
