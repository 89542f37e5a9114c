"""After a scripted conversation, every service's metrics moved by exactly what happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog.testing
from prometheus_client.parser import text_string_to_metric_families

from services.metrics.gauges import ClusterGauges
from shared import keys
from shared.events import (
    Command,
    ConversationCreated,
    MessageSent,
    MessagesSent,
    decode_domain_event,
    encode_event,
)
from shared.protocol import SendMessage
from shared.redis_client import create_standalone
from shared.settings import Settings
from tests.support.cancel import cancel_at_random_moments
from tests.support.chat import create_conversation, send, uid
from tests.support.client import ChatClient
from tests.support.promtool import check_metrics_text
from tests.support.servers import RedisServer, own_database
from tests.support.stack import Service, Stack


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = service.http_get("/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("metric did not reach the expected value")
        await asyncio.sleep(0.2)


async def test_counters_after_a_scripted_conversation(fresh_stack) -> None:
    services = fresh_stack.start_all(CHAT_METRICS_REFRESH_SECONDS="0.5")
    gateway, delivery = services["gateway"], services["delivery"]
    presence, metrics = services["presence"], services["metrics"]
    alice, bob, mallory = uid("alice"), uid("bob"), uid("mallory")
    phone = await ChatClient.connect(gateway.ws_url, alice)
    laptop = await ChatClient.connect(gateway.ws_url, alice)
    b = await ChatClient.connect(gateway.ws_url, bob)
    m = await ChatClient.connect(gateway.ws_url, mallory)
    try:
        conversation = await create_conversation(phone, bob)
        for i in range(5):
            assert (await send(phone, conversation["id"], f"hello {i}"))["type"] == "message_ack"
        for raw in ("nope", "[]"):
            await phone.send_raw(raw)
            assert (await phone.expect("error"))["code"] == "INVALID_FORMAT"
        refused = await send(m, conversation["id"], "let me in")
        assert refused["code"] == "NOT_A_MEMBER"
        assert (await phone.request({"type": "ping"}, "pong"))["type"] == "pong"
        for _ in range(5):
            await b.expect("message")
            await laptop.expect("message")

        g = scrape(gateway)
        assert value(g, "chat_gateway_connections") == 4
        assert value(g, "chat_gateway_connects_total") == 4
        assert value(g, "chat_gateway_frames_in_total", type="send_message") == 6
        assert value(g, "chat_gateway_frames_in_total", type="create_conversation") == 1
        assert value(g, "chat_gateway_frames_in_total", type="invalid") == 2
        assert value(g, "chat_gateway_errors_total", code="INVALID_FORMAT") == 2
        # Every request was timed from frame in to reply out.
        assert value(g, "chat_gateway_request_round_trip_seconds_count", type="send_message") == 6
        assert value(g, "chat_gateway_request_round_trip_seconds_count", type="ping") == 1
        assert (
            value(g, "chat_gateway_request_round_trip_seconds_count", type="create_conversation")
            == 1
        )
        # Each message was pushed on two user channels (alice's other device, bob).
        assert value(g, "chat_message_end_to_end_seconds_count") == 10
        assert (
            value(g, "chat_gateway_frames_out_total", kind="push") == 10 + 2
        )  # + conversation pushes
        check_metrics_text(gateway.http_get("/metrics")[1].decode())

        d = scrape(delivery)
        assert value(d, "chat_delivery_commands_total", type="send_message") == 6
        assert value(d, "chat_delivery_errors_total", code="NOT_A_MEMBER") == 1
        assert value(d, "chat_delivery_fanout_size_count") == 5
        assert value(d, "chat_delivery_fanout_size_sum") == 10
        assert value(d, "chat_delivery_persist_seconds_count") >= 1

        p = scrape(presence)
        assert value(p, "chat_presence_transitions_total", status="online") == 3
        assert value(p, "chat_presence_connection_events_total", kind="open") == 4

        def cluster_ready() -> bool:
            s = scrape(metrics)
            return (
                value(s, "chat_messages_total", content_type="text") == 5
                and value(s, "chat_online_users") == 3
                and value(s, "chat_active_users", window="1m") == 1
                and value(s, "chat_gateways_alive") == 1
                # Gauges are refreshed in the background: the lag read may
                # predate the consumer's last read.
                and value(s, "chat_stream_group_lag", stream="stream:{events}", group="metrics")
                == 0
            )

        await eventually(cluster_ready)
        s = scrape(metrics)
        assert value(s, "chat_conversations_created_total") == 1
        assert value(s, "chat_gateway_connections_registered", gateway=gateway.instance_id) == 4
        check_metrics_text(metrics.http_get("/metrics")[1].decode())

        await m.close()
        await eventually(
            lambda: (
                value(scrape(presence), "chat_presence_transitions_total", status="offline") == 1
            )
        )
    finally:
        for c in (phone, laptop, b, m):
            await c.close()


async def test_a_batch_of_sends_is_one_domain_event_and_either_form_is_counted(
    fresh_stack,
) -> None:
    """Delivery records a batch's messages as one ``MessagesSent``; the metrics service
    counts those and the one-per-message form an older delivery service writes."""
    services = fresh_stack.start_all(CHAT_METRICS_REFRESH_SECONDS="0.5")
    gateway, delivery, metrics = services["gateway"], services["delivery"], services["metrics"]
    alice, bob, carol = uid("alice"), uid("bob"), uid("carol")
    phone = await ChatClient.connect(gateway.ws_url, alice)
    redis_client = fresh_stack.redis_client()
    try:
        cid = (await create_conversation(phone, bob))["id"]
        events = keys.domain_event_stream()
        # Appended while no delivery service runs, the four are one read, one batch.
        delivery.stop()
        settings = Settings.from_env(fresh_stack.env("delivery"))
        stream = keys.command_stream(keys.command_partition(cid, settings.command_partitions))
        for i, content_type in enumerate(("text", "text", "text", "sticker")):
            command = Command(
                user_id=alice,
                connection_id=phone.connected["connectionId"],
                gateway_id=gateway.instance_id,
                accepted_at=time.time(),
                frame=SendMessage(
                    conversation_id=cid, content=f"m{i}", content_type=content_type,
                    request_id=f"r{i}",
                ),
                ack_on_user_channel=True,
            )  # fmt: skip
            await redis_client.xadd(stream, {keys.STREAM_FIELD: encode_event(command)})
        fresh_stack.restart(delivery)
        for i in range(4):
            assert (await phone.expect("message_ack", requestId=f"r{i}"))["message"]["seq"] == i + 1
        recorded = [
            decode_domain_event(body[keys.STREAM_FIELD])
            for _, body in await redis_client.xrange(events)  # this stack's alone
        ]
        assert [type(e) for e in recorded] == [ConversationCreated, MessagesSent], recorded
        event = recorded[1]
        assert isinstance(event, MessagesSent)
        assert [(m.conversation_id, m.sender_id, m.content_type) for m in event.messages] == [
            (cid, alice, "text"),
            (cid, alice, "text"),
            (cid, alice, "text"),
            (cid, alice, "sticker"),
        ]
        # What a delivery service that predates the batch form appends.
        old = MessageSent(cid, carol, "text", int(time.time() * 1000))
        await redis_client.xadd(events, {keys.STREAM_FIELD: encode_event(old)})

        def counted() -> bool:
            s = scrape(metrics)
            return (
                value(s, "chat_messages_total", content_type="text") == 4
                and value(s, "chat_messages_total", content_type="other") == 1
                and value(s, "chat_active_users", window="1m") == 2
            )

        await eventually(counted)
    finally:
        await phone.close()
        await redis_client.aclose()


async def test_health_turns_503_without_redis_and_200_when_back(workdir, ferretdb) -> None:
    server = RedisServer(workdir / uid("redis-health"))
    server.start()
    stack = Stack(server.url, ferretdb.uri, workdir / uid("health"))
    try:
        services = stack.start_all()
        for service in services.values():
            assert service.http_get("/health")[0] == 200
        server.kill9()
        for service in services.values():
            status, body = service.http_get("/health", timeout=10)
            assert status == 503, (service.name, body)
            assert service.http_get("/readyz", timeout=10)[0] == 503
            assert service.http_get("/healthz")[0] == 200
        server.start()

        def healthy() -> bool:
            return all(s.http_get("/health", timeout=10)[0] == 200 for s in services.values())

        await eventually(healthy, timeout=30)
    finally:
        stack.stop()
        server.stop()


async def test_active_user_windows_count_whole_minutes_back_from_the_current_one(
    redis_server: RedisServer,
) -> None:
    """A user active 30 s ago is in the 1-minute window though a new minute has begun."""
    client = create_standalone(Settings(redis_url=own_database(redis_server.url)))
    gauges = ClusterGauges(client, Settings())
    try:
        await client.flushdb()
        while True:
            minute = int(time.time() // 60)
            ages = {"now": 0, "last-minute": 1, "five-ago": 5, "six-ago": 6, "hour-ago": 60}
            for user, age in ages.items():
                await client.pfadd(keys.active_users_key(minute - age), user)
            await gauges.refresh()
            if int(time.time() // 60) == minute:  # no new minute began meanwhile
                break
            await client.flushdb()
        assert gauges.active == {1: 2.0, 5: 3.0, 60: 5.0}
    finally:
        await client.flushdb()
        await client.aclose()


async def test_stream_gauges_skip_a_stream_not_yet_created_and_say_why_one_fails(
    redis_server: RedisServer,
) -> None:
    client = create_standalone(Settings(redis_url=own_database(redis_server.url)))
    gauges = ClusterGauges(client, Settings())
    commands, events = keys.command_stream(0), keys.domain_event_stream()
    try:
        await client.flushdb()
        await client.xgroup_create(commands, "delivery", id="$", mkstream=True)
        await client.set(events, "not a stream")
        with structlog.testing.capture_logs() as logs:
            await gauges.refresh()
        assert gauges.groups[(commands, "delivery")] == (0.0, 0.0)
        # The connection-event stream does not exist yet: nothing to say about it.
        assert [(e["event"], e["stream"]) for e in logs] == [("stream length unavailable", events)]
        assert "WRONGTYPE" in logs[0]["error"]
    finally:
        await client.flushdb()
        await client.aclose()


async def test_the_gauge_refresh_loop_ends_when_cancelled(redis_server: RedisServer) -> None:
    client = create_standalone(Settings(redis_url=own_database(redis_server.url)))
    gauges = ClusterGauges(client, Settings())
    try:
        await cancel_at_random_moments(lambda: gauges.run(0.0005))
    finally:
        await client.aclose()
