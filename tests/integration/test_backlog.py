"""A command stream near its cap: requests are refused, never trimmed away unanswered."""

from __future__ import annotations

import asyncio
import time

from shared import keys
from shared.settings import Settings
from tests.support.chat import create_conversation, uid, until
from tests.support.client import ChatClient

CAP = 300  # CHAT_COMMAND_STREAM_MAXLEN: the gateway refuses from 270 entries on
SENDS = 500


async def test_a_full_command_stream_refuses_requests_instead_of_dropping_them(
    fresh_stack,
) -> None:
    services = fresh_stack.start_all(CHAT_COMMAND_STREAM_MAXLEN=str(CAP))
    gateway, delivery = services["gateway"], services["delivery"]
    sender = await ChatClient.connect(gateway.ws_url, uid("alice"))
    redis_client = fresh_stack.redis_client()
    try:
        cid = (await create_conversation(sender, uid("bob")))["id"]
        stream = keys.command_stream(keys.command_partition(cid, Settings().command_partitions))
        delivery.stop()  # nothing reads the stream: it only grows
        for i in range(SENDS):
            await sender.send(
                {
                    "type": "send_message",
                    "conversationId": cid,
                    "content": f"m{i}",
                    "clientMessageId": f"c{i}",
                    "requestId": f"q{i}",
                }
            )
        # Frames are handled in order: once the pong is here, every send was
        # appended or refused.
        await sender.request({"type": "ping"}, "pong")
        refused = {
            f["requestId"]: f
            for f in sender.frames
            if f.get("type") == "error" and f["code"] == "SERVICE_UNAVAILABLE"
        }
        assert refused, "nothing refused: the stream filled past its high-water mark"
        assert all(f["retryAfterMs"] == 1000 for f in refused.values())
        assert await redis_client.xlen(stream) <= CAP
        _, body = gateway.http_get("/metrics")
        assert f"chat_gateway_backlog_refusals_total {float(len(refused))}".encode() in body

        # Delivery back: every send the gateway took is answered. Without the
        # high-water mark the cap trimmed the oldest of them, which nobody answered.
        fresh_stack.restart(delivery)

        def answered() -> set[str]:
            return {f["requestId"] for f in sender.frames if f.get("type") == "message_ack"}

        expected = {f"q{i}" for i in range(SENDS)} - set(refused)
        try:
            await until(lambda: answered() >= expected, 30)
        except TimeoutError:
            missing = sorted(expected - answered(), key=lambda r: int(r[1:]))
            raise AssertionError(f"{len(missing)} sends never answered: {missing[:5]}…") from None
        assert not answered() & set(refused)
        # Once the backlog is handled (and trimmed), the gateway takes requests
        # again: what a client does, retrying after retryAfterMs.
        deadline = time.monotonic() + 20
        while True:
            after = {"type": "send_message", "conversationId": cid, "content": "after"}
            reply = await sender.request({**after, "clientMessageId": "after"}, "message_ack")
            if reply["type"] == "message_ack":
                break
            assert reply["code"] == "SERVICE_UNAVAILABLE", reply
            assert time.monotonic() < deadline, "still refused after the backlog was handled"
            await asyncio.sleep(reply["retryAfterMs"] / 1000)
    finally:
        await sender.close()
        await redis_client.aclose()
