"""WebSocket clients of the load generator, one class per protocol (picows).

picows calls ``on_ws_frame`` for every frame without creating a task or a
message object, which keeps the load generator's CPU per frame small; every
client of a worker shares one ``Counters`` object.

Every benchmark message carries a marker ``~<send time ns>~<sender uid>~<step>~``
(the rest of the content is padding), so a receiver measures end-to-end
latency from the marker alone, whatever the envelope: the chat ``message``
push, a Centrifugo publication or a Socket.IO event. A marker carrying the
receiver's own uid is its acknowledgement (chat ``message_ack``) or an echo
(Centrifugo also delivers a publication to its publisher).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


class Counters:
    """What one worker saw during the current step."""

    def __init__(self) -> None:
        self.reset(-1)
        self.disconnects = 0
        self.errors_total = 0
        self.error_sample: list[str] = []

    def reset(self, step: int) -> None:
        self.step = step
        self.delivered = 0
        self.latencies = array("q")  # microseconds, one per delivery
        self.acks = 0
        self.ack_latencies = array("q")
        self.echoes = 0
        self.stale = 0  # deliveries of an earlier step
        self.errors = 0
        self.first_delivery = 0.0
        self.last_delivery = 0.0

    def marker(self, data: bytes, start: int, me: int) -> int:
        """Account for the marker at ``data[start] == '~'``; returns the index after it."""
        j = data.index(b"~", start + 1)
        k = data.index(b"~", j + 1)
        end = data.index(b"~", k + 1)
        step = int(data[k + 1 : end])
        if step != self.step:
            self.stale += 1
            return end + 1
        sender = int(data[j + 1 : k])
        latency = (time.time_ns() - int(data[start + 1 : j])) // 1000
        if sender == me:
            # The sender's own copy: chat message_ack, Centrifugo echo.
            self.echoes += 1
            return end + 1
        self.delivered += 1
        self.latencies.append(latency)
        now = time.monotonic()
        if not self.first_delivery:
            self.first_delivery = now
        self.last_delivery = now
        return end + 1

    def ack(self, sent_ns: int, step: int) -> None:
        if step == self.step:
            self.acks += 1
            self.ack_latencies.append((time.time_ns() - sent_ns) // 1000)

    def error(self, text: str) -> None:
        self.errors += 1
        self.errors_total += 1
        if len(self.error_sample) < 5:
            self.error_sample.append(text[:300])


def marker(uid: int, step: int, pad: int) -> str:
    head = f"~{time.time_ns()}~{uid}~{step}~"
    return head + "x" * max(pad - len(head), 0)


class BaseClient(WSListener):
    protocol = ""

    def __init__(self, uid: int, user: str, counters: Counters) -> None:
        super().__init__()
        self.uid = uid
        self.user = user
        self.counters = counters
        self.transport: WSTransport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending: dict[Any, asyncio.Future[Any]] = {}
        self._acks: dict[int, tuple[int, int]] = {}  # request id -> (sent ns, step)
        self._next_id = 1

    # --- picows callbacks -----------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.opened()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.counters.disconnects += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.user}: closed before ready"))
        if not self.closed.done():
            self.closed.set_result(None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("closed"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            self.text(frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    # --- protocol -------------------------------------------------------------------------

    def opened(self) -> None:
        """Connected at the WebSocket level; send what the protocol needs first."""

    def text(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def expect(self, key: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        return future

    def resolve(self, key: Any, value: Any) -> None:
        future = self._pending.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    async def join(self, room: str, create_with: list[str] | None) -> str:
        """Join ``room`` (or create it with these members); returns the room id to send to."""
        raise NotImplementedError

    def send_message(self, room: str, step: int, pad: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close()
            self.transport.disconnect()


class ChatClient(BaseClient):
    """This project's protocol (docs/protocol.md)."""

    protocol = "chat"

    def __init__(self, uid: int, user: str, counters: Counters) -> None:
        super().__init__(uid, user, counters)
        self._sent = 0

    @staticmethod
    def url(base: str, token: str) -> str:
        return f"{base}?token={token}"

    def text(self, data: bytes) -> None:
        counters = self.counters
        i = data.find(b"~")
        if i >= 0:
            if data.startswith(b'{"type":"message_ack"'):
                # Our own marker; its send time gives the ack latency.
                j = data.index(b"~", i + 1)
                k = data.index(b"~", j + 1)
                end = data.index(b"~", k + 1)
                counters.ack(int(data[i + 1 : j]), int(data[k + 1 : end]))
                return
            counters.marker(data, i, self.uid)
            return
        if data.startswith(b'{"type":"connected"'):
            if not self.ready.done():
                self.ready.set_result(None)
            return
        if data.startswith(b'{"type":"error"'):
            frame = _json_decode(data)
            counters.error(data.decode(errors="replace"))
            request_id = frame.get("requestId")
            if request_id is not None:
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(data.decode(errors="replace")))
            return
        if self._pending and data.startswith(b'{"type":"conversation"'):
            frame = _json_decode(data)
            if "requestId" in frame:
                self.resolve(frame["requestId"], frame["conversation"]["id"])

    async def join(self, room: str, create_with: list[str] | None) -> str:
        if create_with is None:
            raise ValueError("chat rooms are created by one member")
        request_id = f"c{self.new_id()}"
        waiter = self.expect(request_id)
        self.send(
            _json_encode(
                {
                    "type": "create_conversation",
                    "participantIds": create_with,
                    "title": room,
                    "requestId": request_id,
                }
            )
        )
        return str(await asyncio.wait_for(waiter, 30))

    def send_message(self, room: str, step: int, pad: int) -> None:
        self._sent += 1
        self.send(
            b'{"type":"send_message","conversationId":"%s","content":"%s","clientMessageId":"%d-%d"}'
            % (room.encode(), marker(self.uid, step, pad).encode(), self.uid, self._sent)
        )


class CentrifugoClient(BaseClient):
    """Centrifugo's bidirectional JSON protocol (client protocol v2)."""

    protocol = "centrifugo"

    def __init__(self, uid: int, user: str, counters: Counters, token: str) -> None:
        super().__init__(uid, user, counters)
        self.token = token

    @staticmethod
    def url(base: str, token: str) -> str:
        return base

    def opened(self) -> None:
        self.expect(1)
        self.send(_json_encode({"id": 1, "connect": {"token": self.token, "name": "bench"}}))
        self._pending[1].add_done_callback(self._connected)

    def _connected(self, future: asyncio.Future[Any]) -> None:
        if self.ready.done():
            return
        if future.exception() is not None:
            self.ready.set_exception(future.exception())  # type: ignore[arg-type]
        elif "error" in future.result():
            self.ready.set_exception(RuntimeError(str(future.result())))
        else:
            self.ready.set_result(None)

    def text(self, data: bytes) -> None:
        counters = self.counters
        for line in data.split(b"\n") if b"\n" in data else (data,):
            i = line.find(b"~")
            if i >= 0:
                while i >= 0:
                    i = line.find(b"~", counters.marker(line, i, self.uid))
                continue
            if line == b"{}":
                self.send(b"{}")  # server ping -> pong
                continue
            if not line:
                continue
            reply = _json_decode(line)
            rid = reply.get("id")
            if rid is None:
                continue
            sent = self._acks.pop(rid, None)
            if sent is not None:
                if "error" in reply:
                    counters.error(line.decode(errors="replace"))
                else:
                    counters.ack(*sent)
                continue
            if "error" in reply:
                counters.error(line.decode(errors="replace"))
            self.resolve(rid, reply)

    async def join(self, room: str, create_with: list[str] | None) -> str:
        rid = self.new_id()
        waiter = self.expect(rid)
        self.send(_json_encode({"id": rid, "subscribe": {"channel": room}}))
        reply = await asyncio.wait_for(waiter, 30)
        if "error" in reply:
            raise RuntimeError(f"subscribe {room}: {reply}")
        return room

    def send_message(self, room: str, step: int, pad: int) -> None:
        rid = self.new_id()
        self._acks[rid] = (time.time_ns(), step)
        self.send(
            b'{"id":%d,"publish":{"channel":"%s","data":"%s"}}'
            % (rid, room.encode(), marker(self.uid, step, pad).encode())
        )


class SocketIOClient(BaseClient):
    """Socket.IO v5 packets over Engine.IO v4, websocket transport only."""

    protocol = "socketio"

    def __init__(self, uid: int, user: str, counters: Counters, token: str) -> None:
        super().__init__(uid, user, counters)
        self.token = token

    @staticmethod
    def url(base: str, token: str) -> str:
        return base

    def text(self, data: bytes) -> None:
        head = data[:2]
        if head == b"42":  # event
            i = data.find(b"~")
            if i >= 0:
                self.counters.marker(data, i, self.uid)
            return
        if head == b"43":  # ack: 43<id>[args]
            bracket = data.index(b"[")
            aid = int(data[2:bracket])
            sent = self._acks.pop(aid, None)
            if sent is not None:
                if b"error" in data:
                    self.counters.error(data.decode(errors="replace"))
                else:
                    self.counters.ack(*sent)
                return
            self.resolve(aid, _json_decode(data[bracket:]))
            return
        if data == b"2":  # Engine.IO ping -> pong
            self.send(b"3")
            return
        if data[:1] == b"0":  # Engine.IO open -> Socket.IO connect with auth
            self.send(b"40" + _json_encode({"token": self.token}))
            return
        if head == b"40":
            if not self.ready.done():
                self.ready.set_result(None)
            return
        if head == b"44":
            self.counters.error(data.decode(errors="replace"))
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(data.decode(errors="replace")))

    async def join(self, room: str, create_with: list[str] | None) -> str:
        aid = self.new_id()
        waiter = self.expect(aid)
        self.send(b"42%d" % aid + _json_encode(["join", room]))
        reply = await asyncio.wait_for(waiter, 30)
        if reply != [True]:
            raise RuntimeError(f"join {room}: {reply}")
        return room

    def send_message(self, room: str, step: int, pad: int) -> None:
        aid = self.new_id()
        self._acks[aid] = (time.time_ns(), step)
        self.send(
            b'42%d["msg","%s","%s"]' % (aid, room.encode(), marker(self.uid, step, pad).encode())
        )


async def connect(
    protocol: str, base_url: str, uid: int, user: str, token: str, counters: Counters
) -> BaseClient:
    client: BaseClient
    if protocol == "chat":
        url = ChatClient.url(base_url, token)

        def factory() -> BaseClient:
            return ChatClient(uid, user, counters)

    elif protocol == "centrifugo":
        url = base_url

        def factory() -> BaseClient:
            return CentrifugoClient(uid, user, counters, token)

    elif protocol == "socketio":
        url = base_url

        def factory() -> BaseClient:
            return SocketIOClient(uid, user, counters, token)

    else:
        raise ValueError(protocol)
    _transport, listener = await ws_connect(
        factory, url, websocket_handshake_timeout=30, read_buffer_init_size=4096
    )
    client = listener  # type: ignore[assignment]
    await asyncio.wait_for(client.ready, 30)
    return client
