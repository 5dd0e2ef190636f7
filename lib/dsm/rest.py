"""A small PostgREST client for the DSM backend (`{SUPABASE_URL}/rest/v1`), service-role key.

Every call carries `apikey: <key>` and `Authorization: Bearer <key>` (CONTRACT.md section 3) and
goes through lib.http.HttpClient. PostgREST's error JSON (`code`, `message`, `details`, `hint`)
becomes a typed lib.errors exception; `PostgrestError.pg_code` keeps the PostgREST/PostgreSQL code
(e.g. PGRST202 = function not found, 42P01 = table missing) so callers can tell "migration not
applied" from "backend down".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import requests

from lib.errors import AgentError, AuthError, RemoteError
from lib.http import NO_RETRY, HttpClient, RetryPolicy, TLSConfig, remote_message
from lib.logs import redact, register_secret

log = logging.getLogger(__name__)

SYSTEM = "DSM backend"
AUTH_HINT = "Check SUPABASE_SERVICE_ROLE_KEY: it must be the project's service-role key (not the anon key)."
# Short and bounded: the executor's loops have their own backoff; a call must not block them long.
DEFAULT_RETRY = RetryPolicy(attempts=3, max_seconds=6.0, backoff_base=0.3, backoff_max=2.0)

# PostgREST / PostgreSQL codes that mean "the schema lacks what we call": apply the migrations.
MISSING_CODES = frozenset({"PGRST202", "PGRST204", "PGRST205", "42P01", "42883", "42703"})

Params = Mapping[str, str] | Sequence[tuple[str, str]]


class PostgrestError(RemoteError):
    """An error answer from PostgREST, with its code, details and hint."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        pg_code: str | None,
        remote_message: str | None,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=pg_code, remote_message=remote_message, hint=hint)
        self.pg_code = pg_code
        self.details = details

    @property
    def schema_missing(self) -> bool:
        return self.pg_code in MISSING_CODES


def in_list(values: Iterable[object]) -> str:
    """A PostgREST `in.(...)` filter value; each value quoted so commas and dots are safe."""
    quoted = []
    for v in values:
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{s}"')
    return "in.(" + ",".join(quoted) + ")"


class RestClient:
    """PostgREST over HttpClient: select / insert / update / upsert / delete / rpc."""

    def __init__(
        self,
        supabase_url: str,
        service_role_key: str,
        tls: TLSConfig | None = None,
        *,
        timeout: tuple[float, float] = (3.0, 15.0),
        retry: RetryPolicy = DEFAULT_RETRY,
        pool_size: int = 16,
    ) -> None:
        register_secret(service_role_key)
        self.base_url = supabase_url.rstrip("/") + "/rest/v1"
        self.http = HttpClient(
            self.base_url,
            tls or TLSConfig(env_prefix="SUPABASE"),
            system=SYSTEM,
            timeout=timeout,
            retry=retry,
            headers={
                "apikey": service_role_key,
                "Authorization": f"Bearer {service_role_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            pool_size=pool_size,
        )

    # -- helpers -------------------------------------------------------------------------------
    def _check(self, resp: requests.Response) -> Any:
        if resp.status_code >= 400:
            raise self._error(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise RemoteError(
                f"{SYSTEM} answered non-JSON ({resp.status_code})", status=resp.status_code
            ) from exc

    @staticmethod
    def _error(resp: requests.Response) -> AgentError:
        code, message = remote_message(resp)
        details = hint = None
        try:
            body = resp.json()
            if isinstance(body, dict):
                details = body.get("details")
                hint = body.get("hint")
        except ValueError:
            pass
        where = redact(resp.url.split("?", 1)[0]) if resp.url else SYSTEM
        text = f"{SYSTEM} answered HTTP {resp.status_code}" + (f": {message}" if message else "")
        if details:
            text += f" ({redact(str(details))[:200]})"
        text += f" [{where}]"
        if resp.status_code in (401, 403) or code in ("PGRST301", "PGRST302", "42501"):
            return AuthError(text, hint=AUTH_HINT)
        err_hint = None
        if code in MISSING_CODES:
            err_hint = "The database lacks a table or function: apply supabase/migrations/ (see --check)."
        elif hint:
            err_hint = redact(str(hint))
        return PostgrestError(
            text,
            status=resp.status_code,
            pg_code=code,
            remote_message=message,
            details=str(details) if details else None,
            hint=err_hint,
        )

    # -- verbs ---------------------------------------------------------------------------------
    def select(
        self,
        table: str,
        params: Params | None = None,
        *,
        columns: str = "*",
        limit: int | None = None,
        offset: int | None = None,
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        """GET rows; params are PostgREST filters like {"id": "eq.<uuid>"}."""
        q: list[tuple[str, str]] = [("select", columns)]
        q.extend(params.items() if isinstance(params, Mapping) else (params or []))
        if order:
            q.append(("order", order))
        if limit is not None:
            q.append(("limit", str(limit)))
        if offset:
            q.append(("offset", str(offset)))
        return self._check(self.http.get(table, params=q)) or []

    def select_all(
        self, table: str, params: Params | None = None, *, columns: str = "*", page: int = 1000
    ) -> list[dict[str, Any]]:
        """Every matching row, page by page (ordered by id so pages are stable)."""
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            batch = self.select(table, params, columns=columns, limit=page, offset=offset, order="id")
            rows.extend(batch)
            if len(batch) < page:
                return rows
            offset += page

    def insert(
        self, table: str, rows: Mapping[str, Any] | list[Mapping[str, Any]], *, returning: bool = True
    ) -> list[dict[str, Any]]:
        prefer = "return=representation" if returning else "return=minimal"
        resp = self.http.post(table, data=_dumps(rows), headers={"Prefer": prefer}, retry=NO_RETRY)
        return self._check(resp) or []

    def upsert(
        self,
        table: str,
        rows: Mapping[str, Any] | list[Mapping[str, Any]],
        *,
        on_conflict: str,
        returning: bool = False,
        ignore_duplicates: bool = False,
    ) -> list[dict[str, Any]]:
        """Insert or merge on the unique column(s) `on_conflict` (idempotent, so it may be retried).
        With ignore_duplicates an existing row is left as it is (rows with client-made ids)."""
        resolution = "ignore-duplicates" if ignore_duplicates else "merge-duplicates"
        prefer = f"resolution={resolution}," + ("return=representation" if returning else "return=minimal")
        resp = self.http.post(
            table,
            params={"on_conflict": on_conflict},
            data=_dumps(rows),
            headers={"Prefer": prefer},
            idempotent=True,
        )
        return self._check(resp) or []

    def update(
        self, table: str, filters: Params, values: Mapping[str, Any], *, returning: bool = False
    ) -> list[dict[str, Any]]:
        """PATCH the rows matching filters (a filter is required: never an unfiltered update)."""
        if not filters:
            raise ValueError("update without a filter")
        prefer = "return=representation" if returning else "return=minimal"
        resp = self.http.patch(
            table, params=filters, data=_dumps(values), headers={"Prefer": prefer}, idempotent=True
        )
        return self._check(resp) or []

    def delete(self, table: str, filters: Params) -> None:
        if not filters:
            raise ValueError("delete without a filter")
        self._check(self.http.delete(table, params=filters))

    def rpc(
        self,
        function: str,
        args: Mapping[str, Any] | None = None,
        *,
        idempotent: bool = False,
        timeout: tuple[float, float] | None = None,
    ) -> Any:
        """POST /rpc/<function>. Not retried unless the caller says the call is idempotent.
        timeout: (connect, read) seconds for this call instead of the client's default."""
        extra: dict[str, Any] = {"timeout": timeout} if timeout else {}
        resp = self.http.post(
            f"rpc/{function}", data=_dumps(dict(args or {})), idempotent=idempotent, **extra
        )
        return self._check(resp)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))
