"""Fixtures: real redis-server and FerretDB processes, and the services over them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from pymongo import AsyncMongoClient

from tests.support.client import ChatClient
from tests.support.servers import FerretDB, RedisServer
from tests.support.stack import Stack


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chat")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    """A redis-py client of the session's redis-server."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def ferretdb(workdir: Path) -> Iterator[FerretDB]:
    server = FerretDB(workdir / "ferretdb")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, ferretdb: FerretDB, workdir: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The four services, shared by the tests of one module."""
    s = Stack(redis_server.url, ferretdb.uri, workdir / request.module.__name__.rsplit(".", 1)[-1])
    s.start_all()
    yield s
    s.stop()


@pytest.fixture
def fresh_stack(
    redis_server: RedisServer, ferretdb: FerretDB, workdir: Path, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """A stack of its own, for tests that kill or restart processes."""
    s = Stack(redis_server.url, ferretdb.uri, workdir / request.node.name[:60])
    yield s
    s.stop()


@pytest.fixture
async def mongo(ferretdb: FerretDB) -> AsyncIterator[AsyncMongoClient]:
    client: AsyncMongoClient = AsyncMongoClient(ferretdb.uri, serverSelectionTimeoutMS=5000)
    yield client
    await client.close()


@pytest.fixture
async def connect(stack: Stack) -> AsyncIterator:
    """connect(user) -> ChatClient on the module's gateway; all closed at the end."""
    clients: list[ChatClient] = []
    gateway = next(s for s in stack.services if s.service == "gateway")

    async def _connect(user: str, **kwargs) -> ChatClient:  # type: ignore[no-untyped-def]
        client = await ChatClient.connect(gateway.ws_url, user, **kwargs)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.close()
