"""PostgREST's error JSON {code, message, details, hint} and its SQLSTATE -> HTTP status table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import psycopg


@dataclass
class ApiError(Exception):
    """An error answered as PostgREST would: status, JSON body and optional extra headers."""

    status: int
    code: str | None
    message: str
    details: str | None = None
    hint: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps(
            {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}
        ).encode()


# Prefix table from the PostgREST docs ("HTTP Status Codes"); exact codes first.
_EXACT = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
}
_PREFIX = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 413,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


def status_for_sqlstate(sqlstate: str | None, role: str) -> int:
    if not sqlstate:
        return 500
    if sqlstate == "42501":
        # PostgREST: 401 when the request is not authenticated (anon), 403 otherwise.
        return 401 if role == "anon" else 403
    if sqlstate in _EXACT:
        return _EXACT[sqlstate]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    return _PREFIX.get(sqlstate[:2], 400)


def from_pg(exc: psycopg.Error, role: str) -> ApiError:
    diag = exc.diag
    sqlstate = exc.sqlstate
    message = diag.message_primary or str(exc)
    return ApiError(
        status=status_for_sqlstate(sqlstate, role),
        code=sqlstate,
        message=message,
        details=diag.message_detail,
        hint=diag.message_hint,
    )


def pgrst(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> ApiError:
    return ApiError(status=status, code=code, message=message, details=details, hint=hint)
