"""Client of the DSM edge functions (`{SUPABASE_URL}/functions/v1/<name>`), CONTRACT.md 1, 2, 6."""

from __future__ import annotations

import json
import logging
from typing import Any

from lib.config import DsmSettings
from lib.dsm.signing import SIGNATURE_HEADER, canonical_json, sign
from lib.errors import AuthError, ConfigError, RemoteError
from lib.http import HttpClient, RetryPolicy, error_for_response

log = logging.getLogger(__name__)

AUTH_MODES = ("auto", "api_token", "jwt", "hmac", "anon")
ROLE_HINT = "The DSM user needs the admin or operator role: ask a DSM admin to grant it."


def functions_base(settings: DsmSettings) -> str:
    """Base URL of the edge functions, from SUPABASE_URL or the DSM_EDGE_FUNCTION_URL override."""
    return settings.backend_url("functions/v1", purpose="reach the DSM edge functions")


class EdgeClient:
    """POSTs JSON to one DSM edge function at a time, with the auth headers the contract asks for."""

    def __init__(
        self,
        settings: DsmSettings,
        *,
        auth: str = "auto",
        jwt: str | None = None,
        timeout: tuple[float, float] = (5.0, 120.0),
        retry: RetryPolicy | None = None,
    ) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}")
        self.settings = settings
        self.auth = auth
        self.jwt = jwt or settings.jwt
        base = settings.supabase_url or settings.edge_function_url or "http://unset.invalid"
        self.http = HttpClient(base, settings.tls, system="DSM backend", timeout=timeout, retry=retry)
        self._check_credentials()

    def _check_credentials(self) -> None:
        s = self.settings
        have = {
            "api_token": bool(s.api_token),
            "jwt": bool(self.jwt),
            "hmac": bool(s.executor_secret),
            "anon": bool(s.anon_key),
        }
        if self.auth == "auto" and not (have["api_token"] or have["jwt"] or have["hmac"]):
            raise ConfigError(
                "No DSM credential: set DSM_API_TOKEN, DSM_JWT_TOKEN, DSM_EMAIL and DSM_PASSWORD, "
                "or EXECUTOR_SHARED_SECRET."
            )
        if self.auth != "auto" and not have[self.auth]:
            names = {"api_token": "DSM_API_TOKEN", "jwt": "DSM_JWT_TOKEN", "hmac": "EXECUTOR_SHARED_SECRET"}
            raise ConfigError(
                f"{names.get(self.auth, 'SUPABASE_ANON_KEY')} is required for {self.auth} auth."
            )

    def url_for(self, function: str) -> str:
        s = self.settings
        if s.edge_function_url and s.edge_function_url.rstrip("/").endswith("/" + function):
            return s.edge_function_url
        if s.edge_function_url and function == "openmanage-sync":
            return s.edge_function_url
        return f"{functions_base(s)}/{function}"

    def headers_for(self, body: object) -> dict[str, str]:
        s, mode = self.settings, self.auth
        headers = {"Content-Type": "application/json"}
        if s.anon_key:
            headers["apikey"] = s.anon_key
        bearer = self.jwt if mode in ("auto", "jwt") and self.jwt else s.anon_key
        if bearer:
            # Hosted Supabase checks a JWT at the gateway even when the function uses another scheme.
            headers["Authorization"] = f"Bearer {bearer}"
        if mode in ("auto", "api_token") and s.api_token:
            headers["X-API-Token"] = s.api_token
        if (
            mode in ("auto", "hmac")
            and s.executor_secret
            and not (mode == "auto" and (s.api_token or self.jwt))
        ):
            headers.update(sign(body, s.executor_secret))
        return headers

    def call(self, function: str, body: dict[str, Any], *, idempotent: bool = False) -> dict[str, Any]:
        """POST `body` to the function; returns its JSON reply or raises a typed error."""
        url = self.url_for(function)
        headers = self.headers_for(body)
        if SIGNATURE_HEADER in headers:
            # Send the canonical bytes themselves, so the signature covers exactly what arrives.
            data = canonical_json(body).encode("utf-8")
        else:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
        resp = self.http.post(url, data=data, headers=headers, idempotent=idempotent)
        if resp.status_code == 401:
            raise AuthError(
                f"DSM rejected the credentials for {function} (HTTP 401).",
                hint="Check DSM_API_TOKEN or DSM_JWT_TOKEN (a JWT expires after an hour), or DSM_EMAIL and "
                "DSM_PASSWORD, or EXECUTOR_SHARED_SECRET and this machine's clock.",
            )
        if resp.status_code == 403:
            raise AuthError(f"DSM refused {function} for this user (HTTP 403).", hint=ROLE_HINT)
        if resp.status_code == 404:
            raise RemoteError(
                f"Edge function {function} not found at {url} (HTTP 404).",
                status=404,
                hint="Check SUPABASE_URL (or DSM_EDGE_FUNCTION_URL) and that the function is deployed.",
            )
        if resp.status_code >= 400:
            raise error_for_response(resp, system=f"DSM edge function {function}")
        try:
            reply = resp.json()
        except ValueError:
            raise RemoteError(
                f"DSM edge function {function} answered HTTP {resp.status_code} with a body that is not JSON.",
                status=resp.status_code,
            ) from None
        if not isinstance(reply, dict):
            raise RemoteError(f"DSM edge function {function} answered an unexpected JSON value.")
        return reply

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
