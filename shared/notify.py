"""Operator command: publish a system notification to every connected client.

    python -m shared.notify "Maintenance at 22:00 UTC" --level warning [--maintenance]

Every gateway relays ``system:notifications`` and ``system:maintenance`` to
all its connections as a ``system_notification`` frame.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from shared import keys
from shared.cli import load_settings
from shared.protocol import SystemNotification, encode
from shared.redis_client import create_redis, publish_command
from shared.settings import Settings


async def publish_notification(
    settings: Settings, message: str, level: str, maintenance: bool = False
) -> int:
    """Publish one notification; returns how many gateways received it."""
    frame = encode(
        SystemNotification(message=message, level=level, timestamp=int(time.time() * 1000))  # type: ignore[arg-type]
    )
    channel = keys.SYSTEM_MAINTENANCE if maintenance else keys.SYSTEM_NOTIFICATIONS
    client = create_redis(settings)
    try:
        return int(await client.execute_command(publish_command(settings), channel, frame))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("message")
    parser.add_argument("--level", choices=["info", "warning", "error"], default="info")
    parser.add_argument("--maintenance", action="store_true", help="use system:maintenance")
    args = parser.parse_args()
    settings = load_settings("notify")
    receivers = asyncio.run(
        publish_notification(settings, args.message, args.level, args.maintenance)
    )
    sys.stdout.write(f"published to {receivers} gateway(s)\n")


if __name__ == "__main__":
    main()
