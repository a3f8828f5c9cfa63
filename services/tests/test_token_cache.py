"""Accepted bearer tokens are remembered until their expiry, and only they."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import jwt.api_jwt
import pytest

from services.api.security import TokenRejectedError, TokenVerifier, mint_token
from services.billing.config import JwtSettings

SETTINGS = JwtSettings(secret="token-cache-test-secret-0123456789abcdef")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now.timestamp()


def test_an_accepted_token_is_answered_from_memory() -> None:
    verifier = TokenVerifier(SETTINGS)
    token = mint_token(SETTINGS, tenant="acme", subject="ada", scopes="read")
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert (first.tenant_id, first.subject) == ("acme", "ada")


def test_a_forged_signature_is_refused_while_the_genuine_token_is_remembered() -> None:
    verifier = TokenVerifier(SETTINGS)
    token = mint_token(SETTINGS, tenant="acme", subject="ada", scopes="read")
    verifier.verify(token)
    forged_claims = jwt.decode(token, options={"verify_signature": False})
    forged_claims["scope"] = "admin"
    other_secret = "another-secret-0123456789abcdef0123"
    header, _, signature = token.split(".")
    _, payload, _ = jwt.encode(forged_claims, other_secret, "HS256").split(".")
    for forged in (
        f"{header}.{payload}.{signature}",  # the genuine signature on changed claims
        jwt.encode(forged_claims, other_secret, "HS256"),
    ):
        with pytest.raises(TokenRejectedError) as refused:
            verifier.verify(forged)
        assert refused.value.code == "token_invalid"


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(datetime.now(UTC))
    verifier = TokenVerifier(SETTINGS, clock=clock)
    token = mint_token(SETTINGS, tenant="acme", subject="ada", lifetime=timedelta(minutes=5))
    verifier.verify(token)
    later = clock.now + timedelta(minutes=10)

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Later:
            del tz
            return cls.fromtimestamp(later.timestamp(), UTC)

    # PyJWT reads the time with datetime.now (jwt/api_jwt.py, _validate_claims).
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    clock.now = later
    with pytest.raises(TokenRejectedError) as refused:
        verifier.verify(token)
    assert refused.value.code == "token_expired"


def test_memory_is_bounded() -> None:
    verifier = TokenVerifier(SETTINGS, size=2)
    tokens = [mint_token(SETTINGS, tenant="acme", subject=f"user{n}") for n in range(5)]
    for n, token in enumerate(tokens):
        assert verifier.verify(token).subject == f"user{n}"
        assert len(verifier._verified) <= 2
