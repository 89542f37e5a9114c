"""The gateway's stream relay on a real Redis: rate-limited frames are
checked and appended in one round trip per batch (standalone Redis), a
refused frame is told to its sender and not appended, and a script Redis
lost is loaded again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from services.gateway.relay import RateCheck, StreamRelay
from shared import keys
from shared.ratelimit import RateLimiter
from shared.settings import Settings
from tests.support.chat import until


@pytest.mark.parametrize("flush_scripts", [False, True], ids=["loaded", "script-lost"])
async def test_checks_and_appends_in_one_round_trip(
    client, redis_server, flush_scripts: bool
) -> None:
    settings = Settings.from_env(
        {"CHAT_REDIS_URL": redis_server.url, "CHAT_RATE_LIMITS": "message:send=2/60"}
    )
    limiter = RateLimiter(client, settings)
    limit = limiter.limit_for("message:send")
    assert limit is not None
    relay = StreamRelay(client, limiter)
    assert relay.conn is not None
    sends: list[int] = []
    real_send = relay.conn.send

    async def counted(commands: Any, timeout: float) -> list[Any]:
        sends.append(len(commands))
        return await real_send(commands, timeout)

    relay.conn.send = counted  # type: ignore[method-assign]
    stream = f"test:{uuid.uuid4().hex}"
    key = keys.rate_limit_key(f"u-{uuid.uuid4().hex}", "message:send")
    limited: list[int] = []
    failed: list[bytes] = []
    await client.script_flush()  # not loaded by an earlier test of this Redis
    relay.start()
    try:
        # The relay loads its script when it starts.
        for _ in range(100):
            if (await client.script_exists(limiter.append_script.sha))[0]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the relay did not load its script")
        if flush_scripts:
            await client.script_flush()  # as after a Redis restart or failover
        # Appended in one loop iteration: one batch.
        for body in (b"a", b"b", b"c"):
            relay.append(
                stream,
                body,
                1000,
                lambda body=body: failed.append(body),
                RateCheck(key, limit, limited.append),
            )
        relay.append(stream, b"unlimited", 1000, lambda: failed.append(b"unlimited"))
        await until(lambda: limited, 5)
        entries = await client.xrange(stream)
        bodies = [fields[keys.STREAM_FIELD] for _, fields in entries]
        if flush_scripts:
            # The checked frames are run again, in their order, after the plain XADD.
            assert bodies == [b"unlimited", b"a", b"b"]
        else:
            assert bodies == [b"a", b"b", b"unlimited"]
        assert len(limited) == 1 and limited[0] > 0  # c: told when to retry
        assert failed == []
        # One round trip, or two when the script had to be loaded again.
        assert sends == ([4, 3] if flush_scripts else [4])
    finally:
        await relay.stop()
