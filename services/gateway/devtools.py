"""The demo web client at ``/`` and, in development mode only, ``/dev/token``.

``/dev/token?user=alice`` signs an HS256 token with the configured secret so
the demo page can sign in by name. It exists only when ``CHAT_DEV_MODE=1``
and HS256 is configured; otherwise it answers 404, like any unknown path.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from shared.tokens import make_token
from shared.web import SETTINGS

STATIC_DIR = Path(__file__).with_name("static")
DEV_TOKEN_TTL_SECONDS = 12 * 3600


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def dev_token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.dev_mode or settings.jwt_algorithm != "HS256":
        raise web.HTTPNotFound()
    user = request.query.get("user", "").strip()
    if not 0 < len(user) <= 64 or not user.replace("-", "").replace("_", "").isalnum():
        return web.json_response(
            {"error": "invalid_user", "message": "user must be 1-64 letters, digits, - or _"},
            status=400,
        )
    token = make_token(user, settings.jwt_secret, name=user, ttl_seconds=DEV_TOKEN_TTL_SECONDS)
    return web.json_response({"token": token, "userId": user, "expiresIn": DEV_TOKEN_TTL_SECONDS})


async def _no_stale_assets(request: web.Request, response: web.StreamResponse) -> None:
    # The page's modules must not be mixed across versions after an upgrade.
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"


def add_routes(app: web.Application) -> None:
    app.on_response_prepare.append(_no_stale_assets)
    app.router.add_get("/", index)
    app.router.add_get("/dev/token", dev_token)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
