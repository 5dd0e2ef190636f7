"""Supabase Auth (GoTrue) subset at /auth/v1: password and refresh_token grants, /user, /logout.

Users live in the lab-only table lab_auth.users (bcrypt via pgcrypto); app roles in public.user_roles.
Error bodies follow GoTrue: with the `X-Supabase-Api-Version: 2024-01-01` header (sent by current
clients) {"code": "invalid_credentials", "message": ...}; without it the older
{"code": 400, "error_code": ..., "msg": ...}.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import keys
from .postgrest import JSON_CT, Response

if TYPE_CHECKING:
    from .server import Backend

ACCESS_TOKEN_SECONDS = 3600


def _error(headers: dict[str, str], status: int, code: str, message: str) -> Response:
    if headers.get("x-supabase-api-version", "") >= "2024-01-01":
        body: dict[str, Any] = {"code": code, "message": message}
    else:
        body = {"code": status, "error_code": code, "msg": message}
    return Response(status, json.dumps(body).encode(), {"Content-Type": JSON_CT})


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _user_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "aud": "authenticated",
        "role": "authenticated",
        "email": row["email"],
        "email_confirmed_at": _iso(row["created_at"]),
        "phone": "",
        "confirmed_at": _iso(row["created_at"]),
        "last_sign_in_at": _iso(row.get("last_sign_in_at")),
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "identities": [],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "is_anonymous": False,
    }


def _session(backend: Backend, row: dict[str, Any], refresh_token: str) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "aud": "authenticated",
        "exp": now + ACCESS_TOKEN_SECONDS,
        "iat": now,
        "iss": backend_url_hint(backend) + "/auth/v1",
        "sub": str(row["id"]),
        "email": row["email"],
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    return {
        "access_token": keys.encode(claims, backend.config.jwt_secret),
        "token_type": "bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "expires_at": now + ACCESS_TOKEN_SECONDS,
        "refresh_token": refresh_token,
        "user": _user_json(row),
    }


def backend_url_hint(backend: Backend) -> str:
    return f"http://{backend.config.host}"


_USER_COLS = "id, email, created_at, updated_at, last_sign_in_at"


def _password_grant(backend: Backend, body: dict[str, Any], headers: dict[str, str]) -> Response:
    email, password = body.get("email"), body.get("password")
    if not email or not password:
        return _error(headers, 400, "validation_failed", "missing email or phone")

    def run(conn: Any) -> dict[str, Any] | None:
        from psycopg.rows import dict_row

        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                f"UPDATE lab_auth.users SET last_sign_in_at = now() WHERE email = lower(%s) "
                f"AND encrypted_password = extensions.crypt(%s, encrypted_password) RETURNING {_USER_COLS}",
                [email, password],
            ).fetchone()
            if row is None:
                return None
            token = secrets.token_urlsafe(16)
            cur.execute(
                "INSERT INTO lab_auth.refresh_tokens (token, user_id) VALUES (%s, %s)", [token, row["id"]]
            )
            row["refresh"] = token
            return row

    row = _as_owner(backend, run)
    if row is None:
        return _error(headers, 400, "invalid_credentials", "Invalid login credentials")
    return Response(
        200, json.dumps(_session(backend, row, row["refresh"])).encode(), {"Content-Type": JSON_CT}
    )


def _refresh_grant(backend: Backend, body: dict[str, Any], headers: dict[str, str]) -> Response:
    token = body.get("refresh_token")

    def run(conn: Any) -> dict[str, Any] | None:
        from psycopg.rows import dict_row

        with conn.cursor(row_factory=dict_row) as cur:
            # Rotation as in GoTrue: the used token is revoked and a new one issued.
            hit = cur.execute(
                "UPDATE lab_auth.refresh_tokens SET revoked = true WHERE token = %s AND NOT revoked RETURNING user_id",
                [token],
            ).fetchone()
            if hit is None:
                return None
            row = cur.execute(
                f"SELECT {_USER_COLS} FROM lab_auth.users WHERE id = %s", [hit["user_id"]]
            ).fetchone()
            new = secrets.token_urlsafe(16)
            cur.execute(
                "INSERT INTO lab_auth.refresh_tokens (token, user_id) VALUES (%s, %s)", [new, hit["user_id"]]
            )
            row["refresh"] = new  # type: ignore[index]
            return row

    row = _as_owner(backend, run) if token else None
    if row is None:
        return _error(
            headers, 400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
        )
    return Response(
        200, json.dumps(_session(backend, row, row["refresh"])).encode(), {"Content-Type": JSON_CT}
    )


def _as_owner(backend: Backend, fn: Any) -> Any:
    """Auth runs as the database owner (GoTrue has its own privileged role), not under the API roles."""
    with backend.pool.connection() as conn, conn.transaction():
        return fn(conn)


def _get_user(backend: Backend, headers: dict[str, str]) -> Response:
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    try:
        claims = keys.decode(token, backend.config.jwt_secret)
    except keys.InvalidToken as exc:
        return _error(headers, 403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc}")
    if not claims.get("sub"):
        return _error(headers, 403, "bad_jwt", "invalid claim: missing sub claim")

    def run(conn: Any) -> dict[str, Any] | None:
        from psycopg.rows import dict_row

        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                f"SELECT {_USER_COLS} FROM lab_auth.users WHERE id = %s", [claims["sub"]]
            ).fetchone()

    row = _as_owner(backend, run)
    if row is None:
        return _error(headers, 403, "user_not_found", "User from sub claim in JWT does not exist")
    return Response(200, json.dumps(_user_json(row)).encode(), {"Content-Type": JSON_CT})


def handle_auth(
    backend: Backend,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
) -> Response:
    denied = backend.check_apikey(headers, query)
    if denied:
        return denied
    if path == "/health":
        return Response(
            200, json.dumps({"name": "GoTrue", "version": "lab"}).encode(), {"Content-Type": JSON_CT}
        )
    if path == "/token" and method == "POST":
        grant = next((v for k, v in query if k == "grant_type"), "")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _error(headers, 400, "bad_json", "Could not parse request body as JSON")
        if not isinstance(data, dict):
            return _error(headers, 400, "bad_json", "Could not parse request body as JSON")
        if grant == "password":
            return _password_grant(backend, data, headers)
        if grant == "refresh_token":
            return _refresh_grant(backend, data, headers)
        return _error(headers, 400, "unsupported_grant_type", "unsupported_grant_type")
    if path == "/user" and method == "GET":
        return _get_user(backend, headers)
    if path == "/logout" and method == "POST":
        return Response(204, b"", {})
    return _error(headers, 404, "not_found", "Not Found")


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
