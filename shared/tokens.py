"""Development tokens: ``python -m shared.tokens alice`` prints an HS256 JWT.

Only for local use with the configured ``CHAT_JWT_SECRET``; production
tokens come from the product's identity provider.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import jwt


def make_token(
    user_id: str,
    secret: str,
    *,
    name: str | None = None,
    ttl_seconds: float = 3600,
    not_before: float | None = None,
    jti: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
) -> str:
    now = time.time()
    claims: dict[str, object] = {
        "sub": user_id,
        "iat": int(now),
        "exp": int(now + ttl_seconds),
        "jti": jti or uuid.uuid4().hex,
    }
    if name is not None:
        claims["name"] = name
    if not_before is not None:
        claims["nbf"] = int(not_before)
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)


def main() -> None:
    from shared.cli import load_settings

    parser = argparse.ArgumentParser(description="print a development JWT")
    parser.add_argument("user")
    parser.add_argument("--name")
    parser.add_argument("--ttl", type=float, default=24 * 3600, help="seconds (default 1 day)")
    args = parser.parse_args()
    settings = load_settings("gateway")
    token = make_token(
        args.user, settings.jwt_secret, name=args.name or args.user, ttl_seconds=args.ttl
    )
    sys.stdout.write(token + "\n")


if __name__ == "__main__":
    main()
