"""The system on a real 6-node Redis Cluster (3 masters + 3 replicas).

The core scenarios of the standalone suite run again here against the
cluster (sharded pub/sub, hash-tagged keys, partitioned streams), then
failover and multi-instance scenarios that only a cluster can show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

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
    test_offline_user_gets_everything_in_order_and_acked_batches_are_gone as test_cluster_offline_queue,
)
from tests.integration.test_presence import (
    test_two_devices_online_until_both_close as test_cluster_presence_two_devices,
)
from tests.integration.test_presence import (
    test_typing_reaches_other_members_and_lapses as test_cluster_typing,
)
from tests.support.chat import create_conversation, uid
from tests.support.client import ChatClient
from tests.support.cluster import RedisCluster
from tests.support.servers import FerretDB
from tests.support.stack import Stack
from tests.support.sync import last_seqs, messages_in, sync

pytestmark = pytest.mark.cluster

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


@pytest.fixture
async def connect(stack: Stack) -> AsyncIterator[Any]:
    clients: list[ChatClient] = []
    gateway = next(s for s in stack.services if s.service == "gateway")

    async def _connect(user: str, **kwargs: Any) -> ChatClient:
        client = await ChatClient.connect(gateway.ws_url, user, **kwargs)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.close()
