"""JWT verification before the WebSocket upgrade.

The algorithm is pinned by configuration: a token whose header names another
algorithm (``none``, or HS256 signed with an RS public key) is refused by
PyJWT because only the configured one is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from aiohttp import web
from jwt.algorithms import HMACAlgorithm

from shared.settings import Settings, public_key


class AuthError(Exception):
    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    name: str | None
    jti: str | None
    expires_at: float


class CheckedOnceHMAC(HMACAlgorithm):
    """HS256 whose key is checked once, not on every token.

    PyJWT's HMAC ``prepare_key`` refuses a key that looks asymmetric (PEM,
    SSH, a DER certificate, JWK JSON) on every call: about half of the 100 µs
    a token took to verify here, for a key that never changes. The checks
    still run, with the same errors, the first time a key is seen; only keys
    that passed are remembered, and only a few (there is one in practice).
    """

    MAX_KEYS = 4

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)
            if len(self._prepared) < self.MAX_KEYS:
                self._prepared[key] = prepared
        return prepared


def use_checked_once_hmac() -> None:
    """Make PyJWT (its process-wide registry: ``jwt.decode``) use ``CheckedOnceHMAC``."""
    if not isinstance(jwt.get_algorithm_by_name("HS256"), CheckedOnceHMAC):
        jwt.unregister_algorithm("HS256")
        jwt.register_algorithm("HS256", CheckedOnceHMAC())


class TokenVerifier:
    """Verifies tokens with one pinned algorithm and its key (or a JWKS by kid)."""

    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.leeway = settings.jwt_leeway_seconds
        self.issuer = settings.jwt_issuer or None
        self.jwks: dict[str, Any] = {}
        self.key: Any = None
        if self.algorithm == "HS256":
            self.key = settings.jwt_secret
            use_checked_once_hmac()
        elif settings.jwt_jwks_file:
            keyset = jwt.PyJWKSet.from_json(Path(settings.jwt_jwks_file).read_text())
            self.jwks = {k.key_id: k.key for k in keyset.keys if k.key_id}
        else:
            # Parsed once here, not by PyJWT on every connect (tens of µs for
            # an RSA key), and a file that holds no usable key stops the
            # gateway at start instead of refusing every client.
            self.key = public_key(self.algorithm, settings.jwt_public_key)

    def _key_for(self, token: str) -> Any:
        if not self.jwks:
            return self.key
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid_token", f"the token is not valid: {exc}") from None
        if kid not in self.jwks:
            raise AuthError("invalid_token", "the token's kid is not in the key set")
        return self.jwks[kid]

    def verify(self, token: str) -> Identity:
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                leeway=self.leeway,
                issuer=self.issuer,
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token_not_yet_valid", "the token is not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid_token", f"the token is not valid: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 128:
            raise AuthError("invalid_token", "the token's sub must be a user id string")
        name = claims.get("name")
        jti = claims.get("jti")
        return Identity(
            user_id=sub,
            name=name if isinstance(name, str) else None,
            jti=jti if isinstance(jti, str) else None,
            expires_at=float(claims["exp"]),
        )


def token_from_request(request: web.Request) -> str | None:
    """Bearer header first, then the ``token`` query parameter."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    # Parsed here rather than through ``request.query``, which caches a
    # MultiDict on the URL: that would stay alive with the request for the
    # whole life of the socket (about 0.8 KB per idle connection).
    for key, value in parse_qsl(request.rel_url.raw_query_string):
        if key == "token":
            return value or None
    return None


def unauthorized(error: AuthError) -> web.Response:
    return web.json_response({"error": error.error, "message": error.message}, status=401)
