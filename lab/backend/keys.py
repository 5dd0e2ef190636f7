"""HS256 JWTs as Supabase issues them: anon and service_role API keys, user access tokens."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt

# Supabase API keys are long-lived JWTs; ten years is what `supabase start` prints as well.
_TEN_YEARS = 10 * 365 * 24 * 3600


def new_secret() -> str:
    return secrets.token_urlsafe(40)


def api_key(secret: str, role: str, *, issued_at: int | None = None) -> str:
    iat = int(time.time()) if issued_at is None else issued_at
    claims = {"iss": "supabase-lab", "ref": "lab", "role": role, "iat": iat, "exp": iat + _TEN_YEARS}
    return jwt.encode(claims, secret, algorithm="HS256")


def encode(claims: dict[str, Any], secret: str) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


class InvalidToken(Exception):
    """The JWT is malformed, badly signed or expired; .expired tells which for the error code."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


_CACHE: dict[tuple[str, str], dict[str, Any]] = {}
_CACHE_MAX = 2048


def decode(token: str, secret: str) -> dict[str, Any]:
    """Verified claims; verified tokens are cached (until their exp) since every request carries one."""
    hit = _CACHE.get((token, secret))
    if hit is not None and (hit.get("exp") is None or hit["exp"] > time.time()):
        return hit
    claims = _decode(token, secret)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[(token, secret)] = claims
    return claims


def _decode(token: str, secret: str) -> dict[str, Any]:
    try:
        # Supabase user tokens carry aud=authenticated; API keys carry none. PostgREST only checks
        # aud when configured to, so we do not verify it either.
        return jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("JWT expired", expired=True) from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("JWSError JWSInvalidSignature") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken(
            "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)"
        ) from exc
