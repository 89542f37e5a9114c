"""Redis that asks who connects: TLS with client certificates (Redis's default
for its TLS port) and passwords, standalone and cluster.

The connections this project holds itself (pipelines, blocking stream reads,
pub/sub) must present the client certificate and verify the server exactly
as redis-py's own connections do; otherwise a service passes its start-up
PING on the pool and then fails on its first held connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis.asyncio as redis

from shared.command_conn import CommandConnection
from shared.pubsub import StandaloneSubscriber
from shared.redis_client import REDIS_ERRORS
from tests.support.chat import chat_through, uid, until
from tests.support.cluster import RedisCluster
from tests.support.servers import FerretDB, RedisServer, RedisTls
from tests.support.stack import Stack
from tests.support.tls import authority


@pytest.fixture(scope="module")
def tls(workdir: Path) -> RedisTls:
    certs = workdir / "tls"
    ca = authority(certs, "test-ca")
    return RedisTls(
        ca.cert_path,
        server=ca.issue(certs, "redis", server=True),
        client=ca.issue(certs, "client", server=False),
    )


@pytest.fixture(scope="module")
def tls_redis(workdir: Path, tls: RedisTls) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis-tls", tls=tls)
    server.start()
    yield server
    server.stop()


async def test_held_connections_present_the_client_certificate(tls_redis: RedisServer) -> None:
    client = redis.Redis.from_url(tls_redis.url)
    conn = CommandConnection(client)
    subscriber = StandaloneSubscriber(client)
    received: list[bytes] = []
    key, channel = uid("tls:"), uid("user:")
    try:
        pipe = client.pipeline(transaction=False)
        pipe.set(key, b"over tls")
        pipe.get(key)
        assert await conn.execute(pipe) == [True, b"over tls"]
        await subscriber.start(lambda _channel, data: received.append(data), lambda: None)
        await subscriber.subscribe(channel)
        assert await client.publish(channel, b"pushed") == 1
        await until(lambda: received == [b"pushed"], 5)
    finally:
        conn.close()
        await subscriber.stop()
        await client.aclose()


async def test_a_server_the_trusted_ca_did_not_sign_is_refused(
    tls_redis: RedisServer, workdir: Path
) -> None:
    assert tls_redis.tls is not None
    stranger = authority(workdir / "tls-stranger", "stranger-ca")
    options = {**tls_redis.tls.client_options(), "ssl_ca_certs": str(stranger.cert_path)}
    client = redis.Redis.from_url(f"rediss://127.0.0.1:{tls_redis.port}/0?{urlencode(options)}")
    conn = CommandConnection(client)
    subscriber = StandaloneSubscriber(client)
    try:
        # redis-py refuses the server; the held connections must refuse it too.
        with pytest.raises(REDIS_ERRORS):
            await client.ping()
        with pytest.raises(REDIS_ERRORS):
            await conn.execute(client.pipeline(transaction=False).ping())
        with pytest.raises(REDIS_ERRORS):
            await subscriber.start(lambda _channel, _data: None, lambda: None)
    finally:
        conn.close()
        await subscriber.stop()
        await client.aclose()


async def test_the_services_chat_over_tls(
    tls_redis: RedisServer, ferretdb: FerretDB, workdir: Path
) -> None:
    await chat_through(Stack(tls_redis.url, ferretdb.uri, workdir / "tls-stack"))


async def test_the_services_chat_over_a_tls_cluster(
    tls: RedisTls, ferretdb: FerretDB, workdir: Path
) -> None:
    """Cluster mode: node discovery, sharded pub/sub and pipelines per node, all over TLS."""
    await _chat_on(
        RedisCluster(workdir / "tls-cluster", size=3, tls=tls),
        ferretdb,
        workdir / "tls-cluster-stack",
        CHAT_REDIS_CLUSTER_TLS="1",
        CHAT_REDIS_TLS_CA_FILE=str(tls.ca),
        CHAT_REDIS_TLS_CERT_FILE=str(tls.client.cert),
        CHAT_REDIS_TLS_KEY_FILE=str(tls.client.key),
    )


async def test_the_services_chat_over_a_cluster_with_a_password(
    ferretdb: FerretDB, workdir: Path
) -> None:
    """Every connection (pool, held, sharded pub/sub per node) authenticates."""
    await _chat_on(
        RedisCluster(workdir / "auth-cluster", size=3, password="cluster-s3cret"),
        ferretdb,
        workdir / "auth-cluster-stack",
        CHAT_REDIS_PASSWORD="cluster-s3cret",
    )


async def _chat_on(cluster: RedisCluster, ferretdb: FerretDB, workdir: Path, **env: str) -> None:
    cluster.start()
    try:
        stack = Stack(
            "redis://unused:1/0",
            ferretdb.uri,
            workdir,
            CHAT_REDIS_CLUSTER_NODES=cluster.startup_nodes,
            **env,
        )
        await chat_through(stack)
    finally:
        cluster.stop()
