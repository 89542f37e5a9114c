"""A terminal chat client for trying the stack by hand.

    uv run python tools/chat_cli.py alice            # in one terminal
    uv run python tools/chat_cli.py bob              # in another

Commands: ``/new bob [title]`` creates a conversation and makes it current,
``/use <conversationId>``, ``/list``, ``/history``; any other line is sent to
the current conversation. Every frame received is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import aiohttp

from shared.tokens import make_token


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("user")
    parser.add_argument(
        "--url", default=f"ws://127.0.0.1:{os.environ.get('CHAT_GATEWAY_PORT', '8080')}/ws"
    )
    args = parser.parse_args()
    secret = os.environ.get("CHAT_JWT_SECRET", "dev-only-secret-change-me-0123456789")
    token = make_token(args.user, secret, name=args.user.title())
    current: dict[str, str] = {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(args.url, headers={"Authorization": f"Bearer {token}"}) as ws,
    ):

        async def reader() -> None:
            async for msg in ws:
                frame = json.loads(msg.data)
                if frame.get("type") == "conversation":
                    current.setdefault("id", frame["conversation"]["id"])
                sys.stdout.write(f"<< {json.dumps(frame)}\n")
                sys.stdout.flush()

        task = asyncio.create_task(reader())
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            line = line.strip()
            if line.startswith("/new "):
                parts = line.split(maxsplit=2)
                frame = {"type": "create_conversation", "participantIds": [parts[1]]}
                if len(parts) > 2:
                    frame["title"] = parts[2]
                current.pop("id", None)
            elif line.startswith("/use "):
                current["id"] = line.split()[1]
                continue
            elif line == "/list":
                frame = {"type": "list_conversations"}
            elif line == "/history":
                frame = {"type": "fetch_history", "conversationId": current.get("id", "")}
            elif line:
                frame = {
                    "type": "send_message",
                    "conversationId": current.get("id", ""),
                    "content": line,
                }
            else:
                continue
            await ws.send_str(json.dumps(frame))
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main())
