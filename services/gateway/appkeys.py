"""Typed application keys of the gateway."""

from __future__ import annotations

from aiohttp import web

from services.gateway.auth import TokenVerifier
from services.gateway.backlog import Backlog
from services.gateway.connevents import ConnectionEvents
from services.gateway.hub import Hub
from services.gateway.relay import StreamRelay
from shared.ratelimit import RateLimiter

HUB = web.AppKey("hub", Hub)
RELAY = web.AppKey("relay", StreamRelay)
VERIFIER = web.AppKey("verifier", TokenVerifier)
LIMITER = web.AppKey("limiter", RateLimiter)
BACKLOG = web.AppKey("backlog", Backlog)
CONN_EVENTS = web.AppKey("conn_events", ConnectionEvents)
