"""The system on a real 6-node Redis Cluster (3 masters + 3 replicas).

The core scenarios of the standalone suite run again here against the
cluster (sharded pub/sub, hash-tagged keys, partitioned streams), then
failover and multi-instance scenarios that only a cluster can show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.redis_client import create_redis
from shared.settings import Settings
from tests.integration.test_chat import (
    test_history_pages_in_order as test_cluster_history_pages_in_order,
)
from tests.integration.test_chat import (
    test_non_member_is_refused as test_cluster_non_member_is_refused,
)
from tests.integration.test_chat import (
    test_two_users_chat_and_every_sender_device_sees_it as test_cluster_two_users_chat,
)
from tests.integration.test_offline import (
    test_offline_user_gets_everything_in_order_and_acked_batches_are_gone as offline_queue,
)
from tests.integration.test_outbox_scripts import advance
from tests.integration.test_presence import (
    test_two_devices_online_until_both_close as test_cluster_presence_two_devices,
)
from tests.integration.test_presence import (
    test_typing_reaches_other_members_and_lapses as test_cluster_typing,
)
from tests.support.chat import create_conversation, message, push_message, send_until_acked, uid
from tests.support.client import ChatClient
from tests.support.cluster import RedisCluster
from tests.support.servers import FerretDB
from tests.support.stack import Stack
from tests.support.sync import last_seqs, messages_in, sync

pytestmark = pytest.mark.cluster
test_cluster_offline_queue = offline_queue

__all__ = [
    "test_cluster_history_pages_in_order",
    "test_cluster_non_member_is_refused",
    "test_cluster_offline_queue",
    "test_cluster_presence_two_devices",
    "test_cluster_two_users_chat",
    "test_cluster_typing",
]


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[RedisCluster]:
    redis_cluster = RedisCluster(workdir / "cluster")
    redis_cluster.start()
    yield redis_cluster
    redis_cluster.stop()


def cluster_stack(cluster: RedisCluster, ferretdb: FerretDB, workdir: Path, name: str) -> Stack:
    return Stack(
        "redis://unused:1/0",
        ferretdb.uri,
        workdir / name,
        CHAT_REDIS_CLUSTER_NODES=cluster.startup_nodes,
    )


@pytest.fixture(scope="module")
def stack(cluster: RedisCluster, ferretdb: FerretDB, workdir: Path) -> Iterator[Stack]:
    s = cluster_stack(cluster, ferretdb, workdir, "cluster-stack")
    s.start_all()
    yield s
    s.stop()


async def test_cluster_outbox_script_call_routes_by_key_and_is_loaded_on_its_node(
    cluster: RedisCluster,
) -> None:
    """A script call in a cluster's fan-out pipeline (``seq_advance``, persistence off):
    each goes to its key's node, which loads the script on first use (NOSCRIPT)."""
    settings = Settings.from_env({"CHAT_REDIS_CLUSTER_NODES": cluster.startup_nodes})
    client = create_redis(settings)
    try:
        counters = [keys.conversation_head_key(uid("c")) for _ in range(6)]
        first = await advance(client, settings, {k: 3 for k in counters}, held=False)
        assert first == {k: 0 for k in counters}
        again = await advance(client, settings, {k: 2 for k in counters}, held=False)
        assert again == {k: 3 for k in counters}
        assert [await client.hget(k, "seq") for k in counters] == [b"3"] * len(counters)
    finally:
        await client.aclose()


async def test_cluster_message_fan_out_queues_for_offline_members_on_their_nodes(
    cluster: RedisCluster,
) -> None:
    """``fanout_keep`` on a cluster: one call per member, on the node of the
    member's slot (its queue and channel share it), where SPUBLISH reaches a
    subscribed member and the others' queues keep the message."""
    settings = Settings.from_env({"CHAT_REDIS_CLUSTER_NODES": cluster.startup_nodes})
    client = create_redis(settings)
    members = [uid("u") for _ in range(6)]
    pubsub = client.pubsub()
    try:
        await client.initialize()  # the slot map, which the pubsub does not load itself
        await pubsub.ssubscribe(keys.user_channel(members[0]))
        deadline = time.monotonic() + 10
        while (await pubsub.get_sharded_message(timeout=0.5)) is None:
            assert time.monotonic() < deadline, "no ssubscribe confirmation"
        kept = await push_message(client, settings, members, message(uid("c"), 1))
        assert kept == [(member, 0) for member in members[1:]]
        lengths = [await client.xlen(keys.offline_queue_key(member)) for member in members]
        assert lengths == [0, 1, 1, 1, 1, 1]
        pushed = await pubsub.get_sharded_message(timeout=5)
        assert pushed is not None and pushed["channel"] == keys.user_channel(members[0]).encode()
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_cluster_heads_are_read_by_key_and_rebuilt(cluster: RedisCluster, connect) -> None:
    """list_conversations reads each conversation's head on its own node, and one the
    cluster lost is rebuilt from the store and written back there."""
    alice, bob = uid("alice"), uid("bob")
    a = await connect(alice)
    cids = [(await create_conversation(a, bob))["id"] for _ in range(4)]
    for n, cid in enumerate(cids):
        for i in range(n + 1):
            await send_until_acked(a, cid, f"{cid}-{i}")  # clientMessageIds are unique
    settings = Settings.from_env({"CHAT_REDIS_CLUSTER_NODES": cluster.startup_nodes})
    client = create_redis(settings)
    try:

        async def listed() -> dict[str, int]:
            reply = await a.request({"type": "list_conversations"}, "conversations")
            return {c["id"]: c["lastSeq"] for c in reply["conversations"]}

        assert await listed() == {cid: n + 1 for n, cid in enumerate(cids)}
        await client.delete(keys.conversation_head_key(cids[2]))
        assert await listed() == {cid: n + 1 for n, cid in enumerate(cids)}
        assert await client.hget(keys.conversation_head_key(cids[2]), "seq") == b"3"
    finally:
        await client.aclose()


async def test_master_kill9_failover_loses_no_acked_message(workdir: Path, ferretdb, mongo) -> None:
    redis_cluster = RedisCluster(workdir / uid("failover"))
    redis_cluster.start()
    s = cluster_stack(redis_cluster, ferretdb, workdir, uid("failover-stack"))
    try:
        gw1 = s.start("gateway")
        gw2 = s.start("gateway")
        s.start("delivery")
        s.start("presence")
        alice, bob = uid("alice"), uid("bob")
        sender = await ChatClient.connect(gw1.ws_url, alice)
        receiver = await ChatClient.connect(gw2.ws_url, bob)
        cid = (await create_conversation(sender, bob))["id"]
        acked: dict[str, dict[str, Any]] = {}
        victim = None
        for i in range(200):
            message = await send_until_acked(sender, cid, f"f{i}")
            acked[message["id"]] = message
            if i == 60:
                victim = redis_cluster.masters()[0]
                victim.kill9()
                killed_at = time.monotonic()
        assert victim is not None and not victim.alive()
        recovered_in = time.monotonic() - killed_at
        # The replica took over: three masters again, one of them promoted.
        assert len(redis_cluster.masters()) == 3
        stored = await mongo[s.db_name].messages.find({"conversationId": cid}).to_list(None)
        assert {d["_id"] for d in stored} == set(acked)
        assert sorted(d["seq"] for d in stored) == list(range(1, 201))
        # The receiver, told to resync or not, closes any gap with sync.
        got = messages_in(receiver.frames)
        got.update(messages_in(await sync(receiver, last_seqs(got, [cid]))))
        assert set(got) == set(acked)
        await sender.close()
        await receiver.close()
        assert recovered_in < 60
    finally:
        s.stop()
        redis_cluster.stop()


async def test_three_gateways_two_of_each_worker_kill_one_of_each(
    ferretdb, workdir: Path, mongo
) -> None:
    # A cluster of its own: a cluster has no databases to keep the module's
    # stack from consuming this stack's command streams.
    cluster = RedisCluster(workdir / uid("multi-cluster"))
    cluster.start()
    s = cluster_stack(cluster, ferretdb, workdir, uid("multi"))
    try:
        gateways = [s.start("gateway") for _ in range(3)]
        deliveries = [s.start("delivery") for _ in range(2)]
        presences = [s.start("presence") for _ in range(2)]
        users = [uid("m") for _ in range(6)]
        clients = {
            u: await ChatClient.connect(gateways[i % 3].ws_url, u) for i, u in enumerate(users)
        }
        watcher = await ChatClient.connect(gateways[2].ws_url, uid("watcher"))
        reply = await watcher.request(
            {"type": "subscribe_presence", "userIds": users}, "presence_state"
        )
        assert reply["type"] == "presence_state"
        # Presence gathers connection events for a moment (EVENTS_LINGER_MS): a
        # user whose open it has not applied yet is told as an update instead.
        for user, state in reply["users"].items():
            if state["status"] != "online":
                await watcher.expect("presence_update", userId=user, status="online")
        a, b = users[0], users[1]  # on gateways 0 and 1
        cid = (await create_conversation(clients[a], b, users[2]))["id"]
        await clients[a].send({"type": "typing_indicator", "conversationId": cid, "isTyping": True})
        typing = await clients[b].expect("typing_indicator")
        assert typing["userId"] == a and typing["isTyping"] is True
        acked: dict[str, dict[str, Any]] = {}
        for i in range(60):
            message = await send_until_acked(clients[a], cid, f"x{i}")
            acked[message["id"]] = message
            if i == 20:
                gateways[2].kill9()  # users[2] and users[5] lose their socket
                deliveries[0].kill9()
                presences[0].kill9()
        stored = await mongo[s.db_name].messages.find({"conversationId": cid}).to_list(None)
        assert {d["_id"] for d in stored} == set(acked)
        assert sorted(d["seq"] for d in stored) == list(range(1, 61))
        got = messages_in(clients[b].frames)
        got.update(messages_in(await sync(clients[b], last_seqs(got, [cid]))))
        assert set(got) == set(acked)
        # Presence converges: the dead gateway's users go offline, the rest stay.
        observer = await ChatClient.connect(gateways[0].ws_url, uid("observer"))
        expected_offline = {users[2], users[5]}
        deadline = time.monotonic() + 30
        while True:
            state = await observer.request(
                {"type": "subscribe_presence", "userIds": users}, "presence_state"
            )
            offline = {u for u, v in state["users"].items() if v["status"] == "offline"}
            if offline == expected_offline or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert offline == expected_offline
        for c in [*clients.values(), watcher, observer]:
            await c.close()
    finally:
        s.stop()
        cluster.stop()
