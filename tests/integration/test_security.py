"""Tokens, revocation, rate limits and connection floods against real gateways."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared import keys
from shared.revoke import revoke
from shared.settings import Settings
from tests.support.chat import create_conversation, uid
from tests.support.client import ChatClient, token_for

ISSUER = "chat-test-issuer"


def _claims(user: str, **extra: object) -> dict[str, object]:
    now = time.time()
    claims: dict[str, object] = {
        "sub": user,
        "iss": ISSUER,
        "iat": int(now),
        "exp": int(now + 600),
        "jti": uuid.uuid4().hex,
    }
    claims.update(extra)
    return claims


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "jwt.pem"
    path.write_bytes(public_pem)
    return private, path, public_pem


async def _status(url: str, token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status


async def test_rs256_gateway_refuses_every_forged_or_stale_token(
    fresh_stack, rsa_keys, redis_server
) -> None:
    private, public_path, public_pem = rsa_keys
    gateway = fresh_stack.start(
        "gateway",
        CHAT_JWT_ALGORITHM="RS256",
        CHAT_JWT_PUBLIC_KEY=str(public_path),
        CHAT_JWT_ISSUER=ISSUER,
        CHAT_JWT_LEEWAY_SECONDS="5",
    )
    fresh_stack.start("presence")
    url = gateway.ws_url.replace("ws://", "http://")
    user = uid("rs")
    good = jwt.encode(_claims(user), private, algorithm="RS256")
    client = await ChatClient.connect(gateway.ws_url, user, token=good)
    assert client.connected["userId"] == user

    unsigned = jwt.encode(_claims(user), None, algorithm="none")  # type: ignore[arg-type]
    confused = (
        jwt.api_jws.PyJWS().encode(
            json.dumps(_claims(user)).encode(), public_pem, algorithm="HS256"
        )
        if False
        else _hs256_with(public_pem, _claims(user))
    )
    forged = {
        "alg=none": unsigned,
        "HS256 signed with the RS public key": confused,
        "expired": jwt.encode(_claims(user, exp=int(time.time()) - 60), private, algorithm="RS256"),
        "not yet valid": jwt.encode(
            _claims(user, nbf=int(time.time()) + 120), private, algorithm="RS256"
        ),
        "other issuer": jwt.encode(_claims(user, iss="someone-else"), private, algorithm="RS256"),
        "no sub": jwt.encode(
            {k: v for k, v in _claims(user).items() if k != "sub"}, private, algorithm="RS256"
        ),
        "other key": jwt.encode(
            _claims(user),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
        ),
    }
    for name, token in forged.items():
        assert await _status(url, token) == 401, name

    # Revocation: new connections refused, the live one closed.
    jti = jwt.decode(good, options={"verify_signature": False})["jti"]
    settings = Settings.from_env({"CHAT_REDIS_URL": fresh_stack.redis_url})
    await revoke(settings, jti, time.time() + 600)
    assert await client.wait_closed() == 1008
    assert await _status(url, good) == 401
    await client.close()


def _hs256_with(secret: bytes, claims: dict[str, object]) -> str:
    """An HS256 token whose HMAC key is the RS public key (algorithm confusion).

    PyJWT refuses to *create* this (it knows a PEM is not an HMAC secret), so
    it is assembled by hand, as an attacker would.
    """
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


async def test_es256_with_jwks_file(fresh_stack, tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": "k1", "alg": "ES256", "use": "sig"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    gateway = fresh_stack.start("gateway", CHAT_JWT_ALGORITHM="ES256", CHAT_JWT_JWKS_FILE=str(jwks))
    fresh_stack.start("presence")
    user = uid("es")
    claims = {"sub": user, "exp": int(time.time()) + 600}
    good = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k1"})
    client = await ChatClient.connect(gateway.ws_url, user, token=good)
    await client.close()
    url = gateway.ws_url.replace("ws://", "http://")
    unknown_kid = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "k2"})
    assert await _status(url, unknown_kid) == 401


async def test_live_connection_closed_4001_when_its_token_expires(connect) -> None:
    user = uid("short")
    client = await connect(user, token=token_for(user, ttl_seconds=2))
    assert await client.wait_closed(timeout=10) == 4001


def _flood_sender(
    url: str, token: str, conversation_id: str, count: int, start_at: float, out
) -> None:  # type: ignore[no-untyped-def]
    """In its own process: wait for the common start, then send as fast as possible."""

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url, headers={"Authorization": f"Bearer {token}"})
            await ws.receive()  # connected
            # Both processes start sending at the same instant.
            await asyncio.sleep(max(start_at - time.time(), 0))
            for i in range(count):
                await ws.send_str(json.dumps({
                    "type": "send_message", "conversationId": conversation_id,
                    "content": f"p{i}", "requestId": f"{uuid.uuid4().hex}",
                }))  # fmt: skip
            results = {"ack": 0, "limited": 0, "other": 0}
            while sum(results.values()) < count:
                frame = json.loads((await ws.receive(timeout=30)).data)
                if frame["type"] == "message_ack":
                    results["ack"] += 1
                elif frame["type"] == "error" and frame["code"] == "RATE_LIMITED":
                    assert frame["retryAfterMs"] > 0
                    results["limited"] += 1
                elif frame["type"] == "error":
                    results["other"] += 1
            out.put(results)
            await ws.close()

    asyncio.run(run())


async def test_two_parallel_clients_cannot_exceed_a_limit_together(fresh_stack) -> None:
    services = fresh_stack.start_all(CHAT_RATE_LIMITS="message:send=10/60")
    gateway = services["gateway"]
    alice = uid("alice")
    owner = await ChatClient.connect(gateway.ws_url, alice)
    conversation = await create_conversation(owner, uid("bob"))
    await owner.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3
    procs = [
        ctx.Process(
            target=_flood_sender,
            args=(gateway.ws_url, token_for(alice), conversation["id"], 30, start_at, out),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [await asyncio.to_thread(out.get, True, 60) for _ in procs]
    for p in procs:
        p.join(10)
    acked = sum(r["ack"] for r in results)
    limited = sum(r["limited"] for r in results)
    assert acked == 10, results  # the burst allowance, shared by both
    assert limited == 50 and all(r["other"] == 0 for r in results)


async def test_connection_flood_from_one_ip_is_held_off(fresh_stack) -> None:
    services = fresh_stack.start_all(CHAT_RATE_LIMITS="connection:ip=50/60")
    gateway = services["gateway"]
    # An existing client, connected before the flood.
    steady = await ChatClient.connect(gateway.ws_url, uid("steady"))
    url = gateway.ws_url.replace("ws://", "http://")
    statuses: list[int] = []
    retry_after: set[str] = set()
    latencies: list[float] = []

    async def attempt(session: aiohttp.ClientSession) -> None:
        async with session.get(
            url, headers={"Authorization": f"Bearer {token_for(uid('f'))}"}
        ) as r:
            statuses.append(r.status)
            if r.status == 429:
                retry_after.add(r.headers.get("Retry-After", ""))

    async def measure() -> None:
        for _ in range(20):
            started = time.monotonic()
            await steady.request({"type": "ping"}, "pong")
            latencies.append(time.monotonic() - started)

    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        flood = asyncio.gather(*(attempt(session) for _ in range(2000)))
        await asyncio.gather(flood, measure())
    # 49 slots remain after the steady client's; everything else is refused.
    upgraded = statuses.count(400) + statuses.count(101)  # GET without upgrade headers -> 400
    assert statuses.count(429) >= 2000 - 50, {s: statuses.count(s) for s in set(statuses)}
    assert upgraded <= 50
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after)
    latencies.sort()
    assert latencies[-1] < 2.0, latencies[-3:]
    assert (await steady.request({"type": "ping"}, "pong"))["type"] == "pong"
    await steady.close()


async def _upgrade_attempt(url: str, user: str) -> tuple[int, dict[str, object], str]:
    """A GET without upgrade headers: 429 (with its body) if admission refuses,
    400 from the WebSocket handshake if admission lets it through."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token_for(user)}"}) as r,
    ):
        body = await r.json() if r.status == 429 else {}
        return r.status, body, r.headers.get("Retry-After", "")


async def test_per_user_connection_cap_and_rate_are_checked_at_the_upgrade(fresh_stack) -> None:
    services = fresh_stack.start_all(
        CHAT_RATE_LIMITS="connection:create=4/60", CHAT_MAX_CONNECTIONS_PER_USER="2"
    )
    gateway = services["gateway"]
    url = gateway.ws_url.replace("ws://", "http://")

    # The per-user rate: four attempts pass admission, the fifth is held off.
    eager = uid("eager")
    for _ in range(4):
        status, _, _ = await _upgrade_attempt(url, eager)
        assert status == 400
    status, body, retry_after = await _upgrade_attempt(url, eager)
    assert status == 429 and body["error"] == "rate_limited", body
    assert body["message"] == "too many connection attempts for this user"
    assert retry_after.isdigit() and int(retry_after) >= 1

    # The cap counts live sockets across gateways, as presence records them
    # from the connection events (waited for here, so no attempt is spent).
    busy = uid("busy")
    live = keys.user_connections_key(busy)
    client = fresh_stack.redis_client()

    async def counted(n: int) -> None:
        deadline = time.monotonic() + 10
        while await client.hlen(live) != n:
            assert time.monotonic() < deadline, await client.hlen(live)
            await asyncio.sleep(0.02)

    first = await ChatClient.connect(gateway.ws_url, busy)
    second = await ChatClient.connect(gateway.ws_url, busy)
    await counted(2)
    status, body, _ = await _upgrade_attempt(url, busy)
    assert status == 429 and body["message"] == "at most 2 connections per user", body
    await first.close()
    await counted(1)
    status, body, _ = await _upgrade_attempt(url, busy)
    assert status == 400, body  # one socket left: admitted again
    await second.close()
    await client.aclose()
