"""Token verification: HS256 keys checked once, with PyJWT's own checks and errors."""

from __future__ import annotations

import time

import jwt
import pytest
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from services.gateway.auth import AuthError, CheckedOnceHMAC, TokenVerifier
from shared.settings import Settings

SECRET = "a-test-secret-of-reasonable-length-0123456789"
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"


def test_a_key_is_checked_once_and_a_bad_one_every_time(monkeypatch) -> None:
    checks: list[str | bytes] = []
    original = HMACAlgorithm.prepare_key

    def counted(self: HMACAlgorithm, key: str | bytes) -> bytes:
        checks.append(key)
        return original(self, key)

    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counted)
    algorithm = CheckedOnceHMAC()
    assert [algorithm.prepare_key(SECRET) for _ in range(3)] == [SECRET.encode()] * 3
    assert checks == [SECRET]
    for _ in range(2):
        with pytest.raises(InvalidKeyError):
            algorithm.prepare_key(PEM)  # an asymmetric key as an HMAC secret
    assert checks == [SECRET, PEM, PEM]


def test_verifier_uses_it_and_still_refuses_what_pyjwt_refuses() -> None:
    verifier = TokenVerifier(Settings.from_env({"CHAT_JWT_SECRET": SECRET}))
    registered = jwt.get_algorithm_by_name("HS256")
    assert isinstance(registered, CheckedOnceHMAC)
    TokenVerifier(Settings.from_env({"CHAT_JWT_SECRET": SECRET}))
    assert jwt.get_algorithm_by_name("HS256") is registered  # registered once, keys kept
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "exp": now + 60}, SECRET, algorithm="HS256")
    assert verifier.verify(token).user_id == "alice"
    forged = jwt.encode({"sub": "alice", "exp": now + 60}, SECRET + "x", algorithm="HS256")
    with pytest.raises(AuthError, match="Signature verification failed"):
        verifier.verify(forged)
    expired = jwt.encode({"sub": "alice", "exp": now - 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as refused:
        verifier.verify(expired)
    assert refused.value.error == "token_expired"
