"""python-socketio peer for bench/: rooms stand in for conversations.

Configured per the python-socketio docs for several server processes: an
``AsyncServer`` on aiohttp (uvloop) with ``AsyncRedisManager`` as the client
manager, so every emit goes through Redis pub/sub and reaches the clients of
every process (this one included). Auth: HS256 JWT in the connect ``auth``
payload, verified with PyJWT (the same secret and claims as the chat gateway).

Events (each with an acknowledgement):
  join(room)           -> enter the room, ack True
  msg(room, content)   -> emit "msg" to the room's other members, ack 1
                          (refused with {"error": ...} when not a member)

Run: python bench/peers/pysocketio_server.py --port P --redis-url URL --secret S
Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import jwt
import socketio
import uvloop
from aiohttp import web


def build_app(redis_url: str, secret: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        transports=["websocket"],
        cors_allowed_origins=[],
        logger=False,
        engineio_logger=False,
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            claims = jwt.decode(
                token or "", secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.InvalidTokenError:
            return False
        await sio.save_session(sid, {"user": claims["sub"]})
        return True

    @sio.on("join")
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, str(room))
        return True

    @sio.on("msg")
    async def msg(sid: str, room: str, content: Any) -> Any:
        if room not in sio.rooms(sid):
            return {"error": "not a member"}
        await sio.emit("msg", content, room=room, skip_sid=sid)
        return 1

    app = web.Application()
    sio.attach(app)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = build_app(args.redis_url, args.secret)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
