"""What the three edge functions share: the gateway JWT check, the auth rules, JSON replies.

Auth rules (CONTRACT.md sections 1, 2, 6):
- X-API-Token: sha256 hex of the token must match api_tokens.token_hash (not expired);
- Bearer user JWT (from /auth/v1/token) whose user has role admin or operator in user_roles;
- executor HMAC (x-executor-signature, x-executor-timestamp) with EXECUTOR_SHARED_SECRET.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from lib.dsm import signing

from .. import keys
from ..postgrest import JSON_CT, Response

if TYPE_CHECKING:
    from ..server import Backend


class Reply(Exception):
    """Raised to answer early with a status and a JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error") or body.get("message"))
        self.status = status
        self.body = body


def reply(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body).encode(), {"Content-Type": JSON_CT})


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gateway_claims(backend: Backend, headers: dict[str, str]) -> dict[str, Any]:
    """Hosted Supabase verifies a JWT (anon key or user token) before the function runs."""
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise Reply(401, {"code": 401, "message": "Missing authorization header"})
    try:
        return keys.decode(auth[7:].strip(), backend.config.jwt_secret)
    except keys.InvalidToken:
        raise Reply(401, {"code": 401, "message": "Invalid JWT"}) from None


def check_api_token(conn: psycopg.Connection, token: str) -> bool:
    digest = hashlib.sha256(token.encode()).hexdigest()
    row = conn.execute(
        "UPDATE public.api_tokens SET last_used_at = now() WHERE token_hash = %s "
        "AND (expires_at IS NULL OR expires_at > now()) RETURNING id",
        [digest],
    ).fetchone()
    return row is not None


def require_operator(conn: psycopg.Connection, claims: dict[str, Any]) -> None:
    """The Bearer token must be a user's (has sub) whose role is admin or operator."""
    sub = claims.get("sub")
    if not sub or claims.get("role") != "authenticated":
        raise Reply(401, {"error": "Unauthorized: a user access token or API token is required"})
    row = conn.execute(
        "SELECT 1 FROM public.user_roles WHERE user_id::text = %s AND role::text IN ('admin', 'operator')",
        [str(sub)],
    ).fetchone()
    if row is None:
        raise Reply(403, {"error": "Insufficient permissions: admin or operator role required"})


def has_signature(headers: dict[str, str]) -> bool:
    return bool(headers.get(signing.SIGNATURE_HEADER) or headers.get(signing.TIMESTAMP_HEADER))


def require_signature(backend: Backend, headers: dict[str, str], body: Any) -> None:
    ok = signing.verify(
        body,
        backend.config.executor_secret,
        headers.get(signing.SIGNATURE_HEADER),
        headers.get(signing.TIMESTAMP_HEADER),
    )
    if not ok:
        raise Reply(401, {"error": "Invalid or expired executor signature"})


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"")
    except ValueError:
        raise Reply(400, {"success": False, "error": "Invalid JSON body"}) from None


def service_connection(backend: Backend):
    """The edge functions use a service-role client: a connection running as service_role."""
    return _ServiceConn(backend)


class _ServiceConn:
    def __init__(self, backend: Backend) -> None:
        self._cm = backend.pool.connection()

    def __enter__(self) -> psycopg.Connection:
        conn = self._cm.__enter__()
        conn.execute("SET ROLE service_role")
        self._conn = conn
        return conn

    def __exit__(self, *exc: Any) -> None:
        try:
            self._conn.execute("RESET ROLE")
        except psycopg.Error:
            pass
        self._cm.__exit__(*exc)
