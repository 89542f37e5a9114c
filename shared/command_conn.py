"""Pipelines on one held Redis connection, read straight from ``data_received``.

The delivery service pays a few round trips per batch (read the next
commands, number them, fan them out); on redis-py each costs about 140 µs of
CPU in the client alone: a connection taken from and given back to the pool,
a retry wrapper, an observability hook, an await and a timeout scope per
reply. Here the commands are still built by redis-py (its command methods
and reply callbacks), but sent on a connection this object holds: one write,
the commands packed by hiredis, the replies parsed by hiredis as they arrive
and handed over all at once, and one deadline timer per connection instead
of a timeout scope per call (about 50 µs for the same pipeline:
``python -m bench.roundtrip``).

Several tasks may use one connection: pipelines are answered in the order
they were written. A blocking command (XREADGROUP ... BLOCK) holds the
connection for its block time, so a blocking reader gets a connection of its
own. Standalone Redis only: on a cluster the client routes every command to
its slot's node and this is not used.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as redis
from redis._parsers.base import BaseParser
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import DEFAULT_RESP_VERSION

from shared.pubsub_conn import CONNECT_TIMEOUT, Endpoint, ReplyReader, encode_command
from shared.redis_client import RedisClient

_NOT_FOR_CALLBACKS = (EMPTY_RESPONSE, NEVER_DECODE, "keys")


def _wire(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """As redis-py packs them: a name like "CLIENT ID" is two words on the wire."""
    name = args[0]
    if isinstance(name, str) and " " in name:
        return (*name.split(), *args[1:])
    return args


class _Waiting:
    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, count: int, future: asyncio.Future[list[Any]], deadline: float) -> None:
        self.count = count
        self.replies: list[Any] = []
        self.future = future
        self.deadline = deadline


class CommandConnection:
    """One Redis connection for pipelines of commands, answered in order."""

    def __init__(self, client: redis.Redis, *, timeout: float = 5.0) -> None:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        self.endpoint = Endpoint.from_kwargs({**kwargs, "connection_class": pool.connection_class})
        self.db = int(kwargs.get("db") or 0)
        # The client's reply callbacks expect the protocol its own connections
        # speak (RESP3 unless configured otherwise): this connection speaks it too.
        self.protocol = int(kwargs.get("protocol") or DEFAULT_RESP_VERSION)
        self.timeout = timeout
        self._client = client
        self._callbacks = client.response_callbacks
        self._protocol: ReplyReader | None = None
        self._waiting: deque[_Waiting] = deque()
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        protocol = self._protocol
        return (
            protocol is not None
            and protocol.transport is not None
            and not protocol.transport.is_closing()
        )

    async def execute(
        self,
        pipe: Pipeline | ClusterPipeline,
        *,
        raise_on_error: bool = True,
        block_ms: int = 0,
    ) -> list[Any]:
        """Send the commands stacked on ``pipe`` in one write; replies as redis-py parses them.

        An error reply is returned in its place (``raise_on_error=False``) or
        raised (the first one). A lost connection or no answer within the
        timeout (plus ``block_ms`` for a blocking command) raises redis-py's
        ConnectionError / TimeoutError; the next call connects again.
        """
        assert isinstance(pipe, Pipeline), "a standalone client's pipeline"
        stack = pipe.command_stack
        if not stack:
            return []
        raw = await self.send([_wire(args) for args, _ in stack], self.timeout + block_ms / 1000)
        results: list[Any] = []
        callbacks = self._callbacks
        for (args, options), reply in zip(stack, raw, strict=True):
            if isinstance(reply, ResponseError):
                results.append(options.get(EMPTY_RESPONSE, reply))
                continue
            callback = callbacks.get(args[0])
            if callback is not None:
                # As redis-py's parse_response: these options are not for callbacks.
                extra = {k: v for k, v in options.items() if k not in _NOT_FOR_CALLBACKS}
                reply = callback(reply, **extra)
            results.append(reply)
        if raise_on_error:
            for result in results:
                if isinstance(result, ResponseError):
                    raise result
        return results

    async def send(self, commands: Sequence[Sequence[Any]], timeout: float) -> list[Any]:
        """Raw commands in, raw replies out (errors as exception instances)."""
        (future,) = await self.start(((commands, timeout),))
        return await future

    async def start(
        self, parts: Sequence[tuple[Sequence[Sequence[Any]], float]]
    ) -> list[asyncio.Future[list[Any]]]:
        """Several pipelines (commands, timeout) in one write; a future of replies for each.

        Redis answers them in order, so a caller can act on the first
        pipeline's replies while a later one (a blocking read) still waits.
        Every part must hold at least one command.
        """
        if not self.connected:
            await self._connect()
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures: list[asyncio.Future[list[Any]]] = []
        for commands, timeout in parts:
            future: asyncio.Future[list[Any]] = loop.create_future()
            self._waiting.append(_Waiting(len(commands), future, now + timeout))
            futures.append(future)
        protocol.write(
            b"".join([encode_command(*command) for commands, _ in parts for command in commands])
        )
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._waiting[0].deadline, self._check_deadline)
        return futures

    def _check_deadline(self) -> None:
        """One timer per connection, not one per call: is the oldest call overdue?

        Replies come in order, so only the oldest waiting call can be overdue
        first. A Redis that stops answering may be gone without a FIN (a
        network partition): the connection is given up and the next call
        opens a new one.
        """
        self._watchdog = None
        if not self._waiting or self._protocol is None:
            return
        loop = asyncio.get_running_loop()
        head = self._waiting[0]
        if loop.time() < head.deadline:
            self._watchdog = loop.call_at(head.deadline, self._check_deadline)
            return
        if not head.future.done():
            head.future.set_exception(RedisTimeoutError("redis did not answer in time"))
        self.lost(self._protocol, RedisTimeoutError("redis did not answer in time"))

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self.connected:
                return
            loop = asyncio.get_running_loop()
            endpoint = self.endpoint
            try:
                _, protocol = await endpoint.open(
                    lambda: ReplyReader(
                        self.on_reply,
                        self._protocol_error,
                        self.lost,
                        # Error replies as redis-py's exception classes (NoScriptError, ...).
                        hiredis.Reader(replyError=BaseParser.parse_error),
                    )
                )
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to redis: {exc}") from exc
            self._protocol = protocol
            setup: list[tuple[Any, ...]] = []
            auth: tuple[str, ...] = ()
            if endpoint.password:
                auth = (endpoint.username or "default", endpoint.password)
            if self.protocol == 3:
                setup.append(("HELLO", 3, *(("AUTH", *auth) if auth else ())))
            elif auth:
                setup.append(("AUTH", *auth))
            if self.db:
                setup.append(("SELECT", self.db))
            if setup:
                future: asyncio.Future[list[Any]] = loop.create_future()
                self._waiting.append(_Waiting(len(setup), future, loop.time() + CONNECT_TIMEOUT))
                assert protocol.transport is not None
                protocol.transport.write(b"".join(encode_command(*c) for c in setup))
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        replies = await future
                except TimeoutError:
                    self.lost(protocol, None)
                    raise RedisTimeoutError("redis did not answer HELLO/AUTH in time") from None
                for reply in replies:
                    if isinstance(reply, Exception):
                        self.lost(protocol, reply)
                        raise RedisConnectionError(f"redis refused the connection: {reply}")

    def on_reply(self, reply: Any) -> None:
        if not self._waiting:
            # Nothing asked for this (a push we never subscribe to): out of step.
            if self._protocol is not None:
                self.lost(self._protocol, RedisConnectionError("unexpected reply from redis"))
            return
        waiting = self._waiting[0]
        waiting.replies.append(reply)
        if len(waiting.replies) == waiting.count:
            self._waiting.popleft()
            if not waiting.future.done():  # its caller may have been cancelled
                waiting.future.set_result(waiting.replies)

    def _protocol_error(self, protocol: ReplyReader, exc: Exception) -> None:
        self.lost(protocol, RedisConnectionError(f"redis protocol error: {exc}"))

    def lost(self, protocol: ReplyReader, exc: Exception | None) -> None:
        """The connection is gone (or out of step): fail everything waiting on it."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        if protocol.transport is not None:
            protocol.transport.abort()
        error = RedisConnectionError(f"redis connection lost: {exc or 'closed by peer'}")
        waiting, self._waiting = self._waiting, deque()
        for item in waiting:
            if not item.future.done():
                item.future.set_exception(error)

    def close(self) -> None:
        if self._protocol is not None:
            self.lost(self._protocol, None)


def held_connection(client: RedisClient) -> CommandConnection | None:
    """A held connection for ``client``'s Redis; None on a cluster (see above)."""
    return None if isinstance(client, RedisCluster) else CommandConnection(client)
