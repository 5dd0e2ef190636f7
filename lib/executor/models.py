"""Rows validated at the edge: jobs, servers, statuses. Raw dicts do not travel past here."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class Priority(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Phase(enum.StrEnum):
    """The phase a job is in; recorded as details.phase (and kept on failure)."""

    VALIDATE = "validate"
    PREFLIGHT = "preflight"
    EXECUTE = "execute"
    POSTCHECK = "postcheck"
    CLEANUP = "cleanup"


class BadRow(ValueError):
    """A row from the backend that cannot be understood; the row is skipped, never crashes the daemon."""


def _parse_ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    text = str(value).replace("Z", "+00:00")
    # PostgREST may send 'YYYY-MM-DD HH:MM:SS+00' or fractional seconds of any length.
    if len(text) > 3 and text[-3] in "+-" and text[-6:-5] != ":" and ":" not in text[-3:]:
        text = text + ":00"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRow(f"bad timestamp {value!r}") from exc


def _freeze(value: Any) -> Any:
    """Deep read-only view for jsonb values so a handler cannot change ctx.job under the runner."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, JSON-serialisable copy of a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Job:
    """A `jobs` row as the executor sees it. `details` and `target_scope` are read-only mappings."""

    id: str
    job_type: str
    status: JobStatus
    target_scope: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    priority: Priority = Priority.NORMAL
    created_by: str | None = None
    created_at: datetime | None = None
    schedule_at: datetime | None = None
    started_at: datetime | None = None
    parent_job_id: str | None = None
    credential_set_ids: tuple[str, ...] = ()
    component_order: int | None = None
    notes: str | None = None
    executor_id: str | None = None
    claim_token: str | None = None
    lease_expires_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """Validate a row; raises BadRow naming what is wrong. NULL details/target_scope become {}."""
        try:
            job_id = str(row["id"])
            job_type = str(row["job_type"])
        except KeyError as exc:
            raise BadRow(f"job row lacks {exc.args[0]}") from exc
        try:
            status = JobStatus(row.get("status") or "pending")
        except ValueError as exc:
            raise BadRow(f"job {job_id}: unknown status {row.get('status')!r}") from exc
        try:
            priority = Priority(row.get("priority") or "normal")
        except ValueError:
            priority = Priority.NORMAL  # be liberal: an odd priority still runs, as normal
        scope = row.get("target_scope") or {}
        details = row.get("details") or {}
        if not isinstance(scope, Mapping):
            raise BadRow(f"job {job_id}: target_scope is not an object")
        if not isinstance(details, Mapping):
            raise BadRow(f"job {job_id}: details is not an object")
        return cls(
            id=job_id,
            job_type=job_type,
            status=status,
            target_scope=_freeze(scope),
            details=_freeze(details),
            priority=priority,
            created_by=row.get("created_by"),
            created_at=_parse_ts(row.get("created_at")),
            schedule_at=_parse_ts(row.get("schedule_at")),
            started_at=_parse_ts(row.get("started_at")),
            parent_job_id=row.get("parent_job_id"),
            credential_set_ids=tuple(str(x) for x in (row.get("credential_set_ids") or ())),
            component_order=row.get("component_order"),
            notes=row.get("notes"),
            executor_id=row.get("executor_id"),
            claim_token=row.get("claim_token"),
            lease_expires_at=_parse_ts(row.get("lease_expires_at")),
        )


SERVER_COLUMNS = (
    "id,ip_address,hostname,service_tag,model,credential_set_id,idrac_username,idrac_password_encrypted,"
    "discovered_by_credential_set_id,requires_legacy_ssl,vcenter_host_id,power_state,overall_health,"
    "connection_status"
)


@dataclass(frozen=True)
class Server:
    """A `servers` row. The encrypted password is kept out of repr (and out of logs)."""

    id: str
    ip_address: str
    hostname: str | None = None
    service_tag: str | None = None
    model: str | None = None
    credential_set_id: str | None = None
    idrac_username: str | None = None
    idrac_password_encrypted: str | None = field(default=None, repr=False)
    discovered_by_credential_set_id: str | None = None
    requires_legacy_ssl: bool = False
    vcenter_host_id: str | None = None
    power_state: str | None = None
    overall_health: str | None = None
    connection_status: str | None = None

    @property
    def label(self) -> str:
        """How logs name this server: hostname or service tag, with the address."""
        name = self.hostname or self.service_tag
        return f"{name} ({self.ip_address})" if name else self.ip_address

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Server:
        try:
            return cls(
                id=str(row["id"]),
                ip_address=str(row["ip_address"]),
                hostname=row.get("hostname"),
                service_tag=row.get("service_tag"),
                model=row.get("model"),
                credential_set_id=row.get("credential_set_id"),
                idrac_username=row.get("idrac_username"),
                idrac_password_encrypted=row.get("idrac_password_encrypted"),
                discovered_by_credential_set_id=row.get("discovered_by_credential_set_id"),
                requires_legacy_ssl=bool(row.get("requires_legacy_ssl") or False),
                vcenter_host_id=row.get("vcenter_host_id"),
                power_state=row.get("power_state"),
                overall_health=row.get("overall_health"),
                connection_status=row.get("connection_status"),
            )
        except KeyError as exc:
            raise BadRow(f"server row lacks {exc.args[0]}") from exc


@dataclass(frozen=True)
class Credentials:
    """A resolved user name and password; the password never appears in repr or str."""

    username: str
    password: str = field(repr=False)
    source: str = ""  # e.g. "credential_set:<id>", "server", "ip_range:<id>", "executor default"

    def __str__(self) -> str:
        return f"{self.username} (from {self.source})"


@dataclass(frozen=True)
class TargetResult:
    """Outcome of one target in ctx.run_per_target: value when ok, else the error message."""

    target: Server
    ok: bool
    value: Any = None
    error: str | None = None


def parse_ids(value: Any) -> list[str]:
    """Ids from a list, a scalar or a comma-separated string (the app writes all three)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, list | tuple):
        out: list[str] = []
        for v in value:
            out.extend(parse_ids(v))
        return out
    return [str(value)]
