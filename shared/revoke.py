"""Operator command: revoke a token by its ``jti``.

    python -m shared.revoke <jti> --expires <token exp, epoch seconds>

The revocation key lives until the token would have expired anyway (plus the
leeway), so the set of revoked ids never grows without bound. Gateways refuse
new connections with that token and close live ones (1008).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from shared import keys
from shared.cli import load_settings
from shared.redis_client import create_redis, publish_command
from shared.settings import Settings


async def revoke(settings: Settings, jti: str, expires_at: float) -> None:
    ttl = max(int(expires_at - time.time()) + settings.jwt_leeway_seconds, 1)
    client = create_redis(settings)
    try:
        await client.set(keys.revoked_token_key(jti), b"1", ex=ttl)
        await client.execute_command(publish_command(settings), keys.REVOCATIONS, jti.encode())
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="revoke a token by jti")
    parser.add_argument("jti")
    parser.add_argument("--expires", type=float, required=True, help="the token's exp")
    args = parser.parse_args()
    settings = load_settings("revoke")
    asyncio.run(revoke(settings, args.jti, args.expires))
    sys.stdout.write(f"revoked {args.jti}\n")


if __name__ == "__main__":
    main()
