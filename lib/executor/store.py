"""Every backend operation of the executor, as a named method over PostgREST (service role).

The daemon, runner and context never build a URL or a query: they call these. Job writes go
through the token-guarded functions of supabase/migrations/0002_executor.sql.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lib.dsm.rest import PostgrestError, RestClient, in_list
from lib.executor.models import SERVER_COLUMNS, Server

log = logging.getLogger(__name__)

MIGRATION_FILE = "supabase/migrations/0002_executor.sql"
SCHEMA_VERSION = 2
MAX_CONSOLE_LOG = 500  # details.console_log keeps the last N lines

# Columns of a servers row a handler may write through ctx.store.update_server.
SERVER_WRITABLE = frozenset(
    {
        "power_state",
        "overall_health",
        "last_health_check",
        "connection_status",
        "connection_error",
        "last_connection_test",
        "credential_test_status",
        "credential_last_tested",
        "idrac_firmware",
        "bios_version",
        "model",
        "hostname",
        "service_tag",
        "cpu_count",
        "memory_gb",
        "last_seen",
        "requires_legacy_ssl",
        "notes",
    }
)


@dataclass(frozen=True)
class Claim:
    job_id: str
    claim_token: str

    def as_json(self) -> dict[str, str]:
        return {"job_id": self.job_id, "claim_token": self.claim_token}


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str
    owned: bool
    graceful_cancel: bool


class JobStore:
    """Named backend operations for the executor."""

    def __init__(self, rest: RestClient, executor_id: str, *, lease_seconds: float) -> None:
        self.rest = rest
        self.executor_id = executor_id
        self.lease_seconds = int(max(3, round(lease_seconds)))

    # -- claims and leases ---------------------------------------------------------------------
    def claim(self, job_types: Sequence[str], limit: int) -> list[dict[str, Any]]:
        if limit <= 0 or not job_types:
            return []
        rows = self.rest.rpc(
            "executor_claim_jobs",
            {
                "p_executor_id": self.executor_id,
                "p_job_types": list(job_types),
                "p_limit": limit,
                "p_lease_seconds": self.lease_seconds,
            },
        )
        return list(rows or [])

    def renew(self, claims: Iterable[Claim]) -> list[JobState]:
        rows = self.rest.rpc(
            "executor_renew_leases",
            {
                "p_executor_id": self.executor_id,
                "p_claims": [c.as_json() for c in claims],
                "p_lease_seconds": self.lease_seconds,
            },
            idempotent=True,
        )
        return [_state(r) for r in rows or []]

    def job_states(self, claims: Iterable[Claim]) -> list[JobState]:
        rows = self.rest.rpc(
            "executor_job_states", {"p_claims": [c.as_json() for c in claims]}, idempotent=True
        )
        return [_state(r) for r in rows or []]

    def fail_stale(self, *, own_only: bool) -> list[dict[str, Any]]:
        return list(
            self.rest.rpc(
                "executor_fail_stale_jobs",
                {"p_executor_id": self.executor_id, "p_own_only": own_only, "p_max_log": MAX_CONSOLE_LOG},
                idempotent=True,
            )
            or []
        )

    # -- job writes (token-guarded) ------------------------------------------------------------
    def update_job(
        self,
        claim: Claim,
        patch: Mapping[str, Any] | None,
        lines: Sequence[str],
        *,
        allow_cancelled: bool = False,
    ) -> bool:
        """False when the job is no longer ours (cancelled, taken over, terminal)."""
        return bool(
            self.rest.rpc(
                "executor_update_job",
                {
                    "p_job_id": claim.job_id,
                    "p_claim_token": claim.claim_token,
                    "p_patch": dict(patch or {}),
                    "p_log_lines": list(lines),
                    "p_max_log": MAX_CONSOLE_LOG,
                    "p_allow_cancelled": allow_cancelled,
                },
            )
        )

    def finish_job(
        self, claim: Claim, status: str, patch: Mapping[str, Any] | None, lines: Sequence[str]
    ) -> str | None:
        """The job's status after the call, or None when it was not ours any more."""
        return self.rest.rpc(
            "executor_finish_job",
            {
                "p_job_id": claim.job_id,
                "p_claim_token": claim.claim_token,
                "p_status": status,
                "p_patch": dict(patch or {}),
                "p_log_lines": list(lines),
                "p_max_log": MAX_CONSOLE_LOG,
            },
        )

    def upsert_task(
        self,
        claim: Claim,
        *,
        server_id: str | None,
        task_id: str | None,
        status: str | None = None,
        progress: int | None = None,
        log_text: str | None = None,
        allow_cancelled: bool = False,
    ) -> str | None:
        return self.rest.rpc(
            "executor_upsert_task",
            {
                "p_job_id": claim.job_id,
                "p_claim_token": claim.claim_token,
                "p_server_id": server_id,
                "p_task_id": task_id,
                "p_status": status,
                "p_progress": progress,
                "p_log": log_text,
                "p_allow_cancelled": allow_cancelled,
            },
        )

    def acquire_server_lock(self, claim: Claim, server_id: str) -> bool:
        return bool(
            self.rest.rpc(
                "executor_acquire_server_lock",
                {
                    "p_server_id": server_id,
                    "p_job_id": claim.job_id,
                    "p_claim_token": claim.claim_token,
                    "p_executor_id": self.executor_id,
                },
                idempotent=True,
            )
        )

    def release_server_lock(self, claim: Claim, server_id: str) -> None:
        self.rest.rpc(
            "executor_release_server_lock",
            {"p_server_id": server_id, "p_job_id": claim.job_id},
            idempotent=True,
        )

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        rows = self.rest.select("jobs", {"id": f"eq.{job_id}"})
        return rows[0] if rows else None

    # -- heartbeat and settings ----------------------------------------------------------------
    def heartbeat(self, row: Mapping[str, Any]) -> None:
        self.rest.upsert("executor_heartbeats", dict(row), on_conflict="executor_id")

    def activity_settings(self) -> dict[str, Any]:
        rows = self.rest.select("activity_settings", limit=1)
        return rows[0] if rows else {}

    def schema_version(self) -> int | None:
        """2 when 0002_executor.sql is applied; None when the function is missing."""
        try:
            return int(self.rest.rpc("executor_schema_version", idempotent=True))
        except PostgrestError as exc:
            if exc.schema_missing or exc.status == 404:
                return None
            raise

    # -- targets -------------------------------------------------------------------------------
    def servers_by_ids(self, ids: Sequence[str]) -> list[Server]:
        out: list[Server] = []
        for i in range(0, len(ids), 200):  # keep URLs short
            rows = self.rest.select("servers", {"id": in_list(ids[i : i + 200])}, columns=SERVER_COLUMNS)
            out.extend(Server.from_row(r) for r in rows)
        return out

    def all_servers(self) -> list[Server]:
        return [Server.from_row(r) for r in self.rest.select_all("servers", columns=SERVER_COLUMNS)]

    def server_ids_for_vcenter_hosts(
        self, *, host_ids: Sequence[str] = (), vcenter_ids: Sequence[str] = (), cluster: str | None = None
    ) -> tuple[list[str], list[str]]:
        """(server ids, host ids without a linked server) for vCenter host selectors."""
        params: list[tuple[str, str]] = []
        if host_ids:
            params.append(("id", in_list(host_ids)))
        if vcenter_ids:
            params.append(("vcenter_id", in_list(vcenter_ids)))
        if cluster is not None:
            params.append(("cluster", f"eq.{cluster}"))
        rows = self.rest.select_all("vcenter_hosts", params, columns="id,name,server_id")
        linked = [str(r["server_id"]) for r in rows if r.get("server_id")]
        unlinked = [str(r.get("name") or r["id"]) for r in rows if not r.get("server_id")]
        # servers.vcenter_host_id is the other direction of the same link
        if host_ids:
            for r in self.rest.select("servers", {"vcenter_host_id": in_list(host_ids)}, columns="id"):
                linked.append(str(r["id"]))
        return sorted(set(linked)), unlinked

    def cluster_name(self, cluster_id: str) -> str | None:
        rows = self.rest.select("vcenter_clusters", {"id": f"eq.{cluster_id}"}, columns="cluster_name")
        return rows[0]["cluster_name"] if rows else None


def _state(row: Mapping[str, Any]) -> JobState:
    return JobState(
        job_id=str(row["job_id"]),
        status=str(row["status"]),
        owned=bool(row["owned"]),
        graceful_cancel=bool(row.get("graceful_cancel")),
    )


class HandlerStoreImpl:
    """The named backend operations offered to handlers as ctx.store (never the jobs table)."""

    def __init__(self, rest: RestClient, job_store: JobStore) -> None:
        self._rest = rest
        self._jobs = job_store

    def get_server(self, server_id: str) -> Server | None:
        found = self._jobs.servers_by_ids([server_id])
        return found[0] if found else None

    def update_server(self, server_id: str, **fields: Any) -> None:
        bad = set(fields) - SERVER_WRITABLE
        if bad:
            raise ValueError(f"update_server: columns not writable by handlers: {sorted(bad)}")
        self._rest.update("servers", {"id": f"eq.{server_id}"}, fields)

    def update_vcenter_host(self, host_id: str, **fields: Any) -> None:
        self._rest.update("vcenter_hosts", {"id": f"eq.{host_id}"}, fields)

    def activity_settings(self) -> Mapping[str, Any]:
        settings = dict(self._jobs.activity_settings())
        settings.pop("encryption_key", None)  # handlers get credentials via ctx.credentials_for
        return settings

    def select(self, table: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        if table == "jobs":
            raise ValueError("handlers do not read or write jobs directly; use ctx")
        return self._rest.select(table, params)

    def insert(self, table: str, rows: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[dict]:
        if table in ("jobs", "job_tasks"):
            raise ValueError("handlers do not write jobs or job_tasks directly; use ctx")
        return self._rest.insert(table, rows)
