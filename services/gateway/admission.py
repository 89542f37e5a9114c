"""Who may open a WebSocket: checks made before the upgrade.

In order, each refusal answered over plain HTTP with a JSON body:
1. the client IP's connection rate (429 + Retry-After) - before any token
   work, so a flood from one address stays cheap to refuse;
2. the token (401): signature with the pinned algorithm, exp/nbf with leeway,
   issuer when configured;
3. in one Redis round trip: revocation of the token's jti (401), the user's
   connection rate (429) and the user's live connections across all gateways
   against the per-user cap (429).
If Redis cannot be reached the gateway could not serve the socket anyway, so
it answers 503 rather than letting anyone in unchecked.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from services.gateway import metrics
from services.gateway.appkeys import LIMITER, RELAY, VERIFIER
from services.gateway.auth import AuthError, Identity, token_from_request, unauthorized
from shared import keys
from shared.ratelimit import decision_from_reply
from shared.redis_client import REDIS_ERRORS
from shared.scripts import execute_raw
from shared.web import REDIS, SETTINGS


def client_ip(request: web.Request) -> str:
    if request.app[SETTINGS].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first[:64]
    return request.remote or "unknown"


def too_many(message: str, retry_after_ms: int) -> web.Response:
    seconds = max(math.ceil(retry_after_ms / 1000), 1)
    return web.json_response(
        {"error": "rate_limited", "message": message, "retryAfterMs": retry_after_ms},
        status=429,
        headers={"Retry-After": str(seconds)},
    )


def unavailable() -> web.Response:
    return web.json_response(
        {"error": "unavailable", "message": "backing store unavailable; retry"}, status=503
    )


async def admit(request: web.Request) -> Identity | web.Response:
    """The caller's identity, or the HTTP response that refuses the upgrade."""
    app = request.app
    settings = app[SETTINGS]
    limiter = app[LIMITER]
    try:
        decision = await limiter.check_ip(client_ip(request), "connection:ip", app[RELAY].conn)
    except REDIS_ERRORS:
        return unavailable()
    if not decision.allowed:
        metrics.AUTH_FAILURES.labels(reason="ip_rate_limited").inc()
        return too_many("too many connection attempts from this address", decision.retry_after_ms)

    token = token_from_request(request)
    try:
        if token is None:
            raise AuthError("missing_token", "a bearer token or ?token= is required")
        identity = app[VERIFIER].verify(token)
    except AuthError as exc:
        metrics.AUTH_FAILURES.labels(reason=exc.error).inc()
        return unauthorized(exc)

    commands: list[tuple[Any, ...]] = [
        ("EXISTS", keys.revoked_token_key(identity.jti or "")),
        ("HLEN", keys.user_connections_key(identity.user_id)),
    ]
    limit = limiter.limit_for("connection:create")
    scripts = []
    if limit is not None:
        key = keys.rate_limit_key(identity.user_id, "connection:create")
        commands.append(limiter.check_words(key, limit))
        scripts.append(limiter.script)
    try:
        # Standalone: one pipeline on the relay's held connection (pipelines
        # of several tasks are answered in order), as words: no redis-py
        # pipeline object per connect.
        replies = await execute_raw(app[REDIS], commands, scripts, app[RELAY].conn)
    except REDIS_ERRORS:
        return unavailable()
    if identity.jti and replies[0]:
        metrics.AUTH_FAILURES.labels(reason="token_revoked").inc()
        return unauthorized(AuthError("token_revoked", "the token has been revoked"))
    if limit is not None:
        decision = decision_from_reply(replies[2])
        if not decision.allowed:
            metrics.AUTH_FAILURES.labels(reason="user_rate_limited").inc()
            return too_many("too many connection attempts for this user", decision.retry_after_ms)
    if int(replies[1]) >= settings.max_connections_per_user:
        metrics.AUTH_FAILURES.labels(reason="too_many_connections").inc()
        return too_many(f"at most {settings.max_connections_per_user} connections per user", 10_000)
    return identity
