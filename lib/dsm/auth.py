"""Sign in to DSM's Supabase Auth with DSM_EMAIL and DSM_PASSWORD, for a user JWT.

`POST {SUPABASE_URL}/auth/v1/token?grant_type=password` with `{"email", "password"}` (what
supabase-py's `auth.sign_in_with_password` sends), through lib/http.py like every other call.
The operator no longer pastes a JWT from a browser: the token is fetched per run and never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lib.config import DsmSettings
from lib.errors import AuthError, ConfigError, RemoteError
from lib.http import HttpClient, RetryPolicy, error_for_response, remote_message
from lib.logs import register_secret

log = logging.getLogger(__name__)

SYSTEM = "DSM sign-in (Supabase Auth)"
# Sign-in has no side effects beyond rate limiting: retry only what is clearly transient, briefly.
SIGN_IN_RETRY = RetryPolicy(attempts=3, max_seconds=15.0, statuses=frozenset({502, 503, 504}))

BAD_CREDENTIALS_HINT = (
    "Check DSM_EMAIL and DSM_PASSWORD: they are the e-mail and password you sign in to DSM with "
    "(the user needs the admin or operator role). Or set DSM_JWT_TOKEN or EXECUTOR_SHARED_SECRET instead."
)


def _auth_url(settings: DsmSettings) -> str:
    return settings.backend_url("auth/v1", purpose="sign in with DSM_EMAIL and DSM_PASSWORD")


def sign_in_with_password(settings: DsmSettings, *, timeout: tuple[float, float] = (5.0, 30.0)) -> str:
    """The access token (JWT) of DSM_EMAIL; raises AuthError naming the variables on a wrong login."""
    if not settings.email or not settings.password:
        missing = " and ".join(
            n for n, v in (("DSM_EMAIL", settings.email), ("DSM_PASSWORD", settings.password)) if not v
        )
        raise ConfigError(f"{missing} must be set to sign in to DSM.", hint=BAD_CREDENTIALS_HINT)
    headers = {"Content-Type": "application/json"}
    if settings.anon_key:
        # Supabase's gateway refuses any call without an API key, sign-in included.
        headers["apikey"] = settings.anon_key
        headers["Authorization"] = f"Bearer {settings.anon_key}"
    with HttpClient(
        _auth_url(settings), settings.tls, system="DSM backend", timeout=timeout, retry=SIGN_IN_RETRY
    ) as http:
        resp = http.post(
            "token",
            params={"grant_type": "password"},
            json={"email": settings.email, "password": settings.password},
            headers=headers,
            idempotent=True,
        )
    if resp.status_code in (400, 401, 403, 422):
        raise _login_error(resp, settings)
    if resp.status_code == 429:
        raise AuthError(
            "DSM sign-in is rate limited (HTTP 429): too many attempts.",
            hint="Wait a few minutes before the next run; check that DSM_PASSWORD is right.",
        )
    if resp.status_code >= 400:
        raise error_for_response(resp, system=SYSTEM)
    token = _access_token(resp)
    register_secret(token)
    log.info("signed in to DSM as %s", settings.email)
    return token


def _access_token(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise RemoteError(
            f"{SYSTEM} answered HTTP {resp.status_code} without an access token.",
            status=resp.status_code,
            hint="Check SUPABASE_URL points at the DSM project's Supabase URL.",
        )
    return token


def _login_error(resp: Any, settings: DsmSettings) -> AuthError:
    _, message = remote_message(resp)
    text = (message or "").lower()
    if "api key" in text or "apikey" in text:
        return AuthError(
            f"DSM refused the sign-in: {message} (HTTP {resp.status_code}).",
            hint="Set SUPABASE_ANON_KEY to the DSM project's anon (public) key.",
        )
    if "not confirmed" in text:
        return AuthError(
            f"DSM user {settings.email} has not confirmed the e-mail address (DSM_EMAIL).",
            hint="Confirm the address from the sign-up e-mail, or ask a DSM admin to confirm the user.",
        )
    return AuthError(
        f"DSM rejected the sign-in of {settings.email} (DSM_EMAIL / DSM_PASSWORD): "
        f"{message or 'invalid login credentials'} (HTTP {resp.status_code}).",
        hint=BAD_CREDENTIALS_HINT,
    )


def check_jwt(settings: DsmSettings, jwt: str, *, timeout: tuple[float, float] = (5.0, 30.0)) -> str | None:
    """Ask Supabase Auth whether DSM_JWT_TOKEN is still valid (`GET /auth/v1/user`), so an expired
    token fails before anything else is touched. Returns the user's e-mail when the server says.

    A server without that endpoint (404) is not an error: the token is then tried on first use.
    """
    headers = {"Authorization": f"Bearer {jwt}"}
    if settings.anon_key:
        headers["apikey"] = settings.anon_key
    with HttpClient(
        _auth_url(settings), settings.tls, system="DSM backend", timeout=timeout, retry=SIGN_IN_RETRY
    ) as http:
        resp = http.get("user", headers=headers)
    if resp.status_code in (401, 403):
        _, message = remote_message(resp)
        raise AuthError(
            f"DSM rejected DSM_JWT_TOKEN: {message or 'invalid or expired token'} (HTTP {resp.status_code}).",
            hint="A DSM JWT expires after about an hour: set DSM_EMAIL and DSM_PASSWORD instead, so each run "
            "signs in by itself, or paste a fresh token.",
        )
    if resp.status_code == 404:
        log.debug("the DSM backend has no /auth/v1/user; DSM_JWT_TOKEN will be checked on first use")
        return None
    if resp.status_code >= 400:
        raise error_for_response(resp, system=SYSTEM)
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("email") if isinstance(body, dict) else None


# ---------------------------------------------------------------------------------------------------
# Which DSM credential an edge call uses: the one choice both syncs make (CONTRACT.md 1, 2, 6)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DsmAuth:
    mode: str  # the EdgeClient auth mode: "api_token", "jwt" or "hmac"
    jwt: str | None
    described: str  # for the log and --check; never holds a secret


# What each edge function accepts, in the order used when several credentials are configured: a
# long-lived API token, then a fresh sign-in (DSM_EMAIL/DSM_PASSWORD), then a pasted JWT (expires
# within the hour), then the executor signature. openmanage-sync has no HMAC check (CONTRACT.md 1);
# vcenter-sync takes no API token (CONTRACT.md 2).
ACCEPTED_AUTH: dict[str, tuple[str, ...]] = {
    "openmanage-sync": ("api_token", "password", "jwt"),
    "vcenter-sync": ("password", "jwt", "hmac"),
}
AUTH_VARIABLES = {
    "api_token": "DSM_API_TOKEN",
    "password": "DSM_EMAIL and DSM_PASSWORD",
    "jwt": "DSM_JWT_TOKEN",
    "hmac": "EXECUTOR_SHARED_SECRET",
}


def choose_auth(settings: DsmSettings, function: str) -> DsmAuth:
    """Settle the credential for calls to `function`, failing now (exit 3, or 2 when none fits)
    rather than after the source system was read: a sign-in happens here, a DSM_JWT_TOKEN is checked
    here. A credential the operator set explicitly wins and fails loudly; it never silently falls
    back to the next one."""
    accepted = ACCEPTED_AUTH.get(function, tuple(AUTH_VARIABLES))
    configured = {
        "api_token": bool(settings.api_token),
        "password": bool(settings.email or settings.password),  # half of the pair: say what is missing
        "jwt": bool(settings.jwt),
        "hmac": bool(settings.executor_secret),
    }
    for mode in accepted:
        if not configured[mode]:
            continue
        if mode == "api_token":
            return DsmAuth("api_token", None, "DSM_API_TOKEN")
        if mode == "password":
            return DsmAuth("jwt", sign_in_with_password(settings), f"signed in as {settings.email}")
        if mode == "jwt":
            assert settings.jwt is not None
            who = check_jwt(settings, settings.jwt)
            return DsmAuth("jwt", settings.jwt, f"DSM_JWT_TOKEN of {who}" if who else "DSM_JWT_TOKEN")
        return DsmAuth("hmac", None, "executor HMAC signature (EXECUTOR_SHARED_SECRET)")
    choices = ", or ".join(AUTH_VARIABLES[m] for m in accepted)
    hint = f"Set {choices} (a DSM user needs the admin or operator role)."
    refused = [AUTH_VARIABLES[m] for m in AUTH_VARIABLES if configured[m] and m not in accepted]
    if refused:
        raise ConfigError(f"{function} does not accept {' or '.join(refused)}.", hint=hint)
    raise ConfigError(f"No DSM credential for {function}.", hint=hint)
