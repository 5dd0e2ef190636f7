"""Every backend operation of the executor, as a named method over PostgREST (service role).

The daemon, runner and context never build a URL or a query: they call these. Job writes go
through the token-guarded functions of supabase/migrations/0002_executor.sql.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lib.dsm.rest import PostgrestError, RestClient, in_list
from lib.errors import ConfigError
from lib.executor.models import SERVER_COLUMNS, Server

if TYPE_CHECKING:
    from lib.sync.table_sink import OmeConnection, OmeTableSink, VcenterConnection, VcenterTableSink

log = logging.getLogger(__name__)

MIGRATION_FILE = "supabase/migrations/0002_executor.sql"
SCHEMA_VERSION = 4  # 4: executor_upsert_steps (workflow_executions step rows)
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


# Tables a handler must never insert into directly: the runner's bookkeeping (jobs, tasks, audit),
# credentials and settings (secrets), and what identifies users and executors.
HANDLER_UNWRITABLE = frozenset(
    {
        "jobs",
        "job_tasks",
        "idrac_commands",
        "workflow_executions",
        "executor_heartbeats",
        "executor_server_locks",
        "credential_sets",
        "credential_ip_ranges",
        "activity_settings",
        "openmanage_settings",
        "vcenters",
        "api_tokens",
        "user_roles",
    }
)
# What a handler may read through ctx.store.select: table -> readable columns. Never a secret
# column (servers.idrac_password_encrypted, vcenters.password_encrypted), never activity_settings
# (encryption_key) or credential_sets: credentials come decrypted through ctx.credentials_for.
HANDLER_READABLE: dict[str, frozenset[str]] = {
    "servers": frozenset(
        {
            "id",
            "ip_address",
            "service_tag",
            "hostname",
            "model",
            "manufacturer",
            "idrac_firmware",
            "bios_version",
            "cpu_count",
            "memory_gb",
            "power_state",
            "overall_health",
            "last_seen",
            "openmanage_device_id",
            "last_openmanage_sync",
            "vcenter_host_id",
            "credential_set_id",
            "idrac_username",
            "discovered_by_credential_set_id",
            "connection_status",
            "connection_error",
            "last_connection_test",
            "last_health_check",
            "requires_legacy_ssl",
            "notes",
            "created_at",
            "updated_at",
        }
    ),
    "vcenter_hosts": frozenset(
        {
            "id",
            "vcenter_id",
            "source_vcenter_id",
            "name",
            "cluster",
            "serial_number",
            "server_id",
            "esxi_version",
            "status",
            "maintenance_mode",
            "last_sync",
            "created_at",
            "updated_at",
        }
    ),
    "vcenter_clusters": frozenset(
        {
            "id",
            "vcenter_id",
            "source_vcenter_id",
            "cluster_name",
            "datacenter",
            "host_count",
            "vm_count",
            "ha_enabled",
            "drs_enabled",
            "drs_automation_level",
            "overall_status",
            "last_sync",
        }
    ),
    "vcenters": frozenset(
        {
            "id",
            "name",
            "host",
            "port",
            "verify_ssl",
            "sync_enabled",
            "last_sync",
            "last_sync_status",
            "is_primary",
        }
    ),
}
_PAGING_KEYS = frozenset({"limit", "offset"})


@dataclass(frozen=True)
class Claim:
    job_id: str
    claim_token: str

    def as_json(self) -> dict[str, str]:
        return {"job_id": self.job_id, "claim_token": self.claim_token}


@dataclass(frozen=True)
class Peer:
    """Another live process writing the same executor id's heartbeat."""

    hostname: str | None
    startup_time: str | None
    seen_seconds_ago: float


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
            timeout=self.renew_timeout(),
        )
        return [_state(r) for r in rows or []]

    def renew_timeout(self) -> tuple[float, float]:
        """Bounded (connect, read) timeout of one renewal: a slow backend must not hold the renewer
        past the point where the lease could lapse (renewals run every third of the lease)."""
        return (3.0, max(2.0, self.lease_seconds / 4))

    def job_states(self, claims: Iterable[Claim]) -> list[JobState]:
        rows = self.rest.rpc(
            "executor_job_states",
            {"p_claims": [c.as_json() for c in claims]},
            idempotent=True,
            timeout=self.renew_timeout(),
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
        seq: int | None = None,
    ) -> bool:
        """False when the job is no longer ours (cancelled, taken over, terminal). seq: the batch's
        number under this claim; re-sending the same batch with the same seq applies it once."""
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
                    "p_seq": seq,
                },
            )
        )

    def finish_job(
        self,
        claim: Claim,
        status: str,
        patch: Mapping[str, Any] | None,
        lines: Sequence[str],
        *,
        seq: int | None = None,
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
                "p_seq": seq,
            },
        )

    def release_paused(
        self, claim: Claim, patch: Mapping[str, Any] | None, lines: Sequence[str]
    ) -> str | None:
        """Annotate a job the UI paused and give up its claim; 'paused', or None when not paused
        under this claim any more."""
        return self.rest.rpc(
            "executor_release_paused_job",
            {
                "p_job_id": claim.job_id,
                "p_claim_token": claim.claim_token,
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
        seq: int | None = None,
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
                "p_seq": seq,
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

    def insert_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """idrac_commands rows, each with a client-made id: a re-sent batch inserts nothing twice."""
        self.rest.upsert("idrac_commands", [dict(r) for r in rows], on_conflict="id", ignore_duplicates=True)

    def upsert_steps(
        self, claim: Claim, rows: Sequence[Mapping[str, Any]], *, allow_cancelled: bool = False
    ) -> bool:
        """workflow_executions step rows of a job we own, applied in order. Each row carries a
        client-made id: re-sending is a no-op and an older write never undoes a newer one. False
        when the job is no longer ours (nothing written)."""
        return bool(
            self.rest.rpc(
                "executor_upsert_steps",
                {
                    "p_job_id": claim.job_id,
                    "p_claim_token": claim.claim_token,
                    "p_steps": [dict(r) for r in rows],
                    "p_allow_cancelled": allow_cancelled,
                },
                idempotent=True,
            )
        )

    def last_step_number(self, job_id: str) -> int:
        """The highest workflow_executions.step_number of a job (0 when none): a job run again
        (paused, then set back to pending) numbers its new steps after the old ones."""
        rows = self.rest.select(
            "workflow_executions",
            {"job_id": f"eq.{job_id}"},
            columns="step_number",
            order="step_number.desc",
            limit=1,
        )
        return int(rows[0]["step_number"]) if rows else 0

    def unhandled_pending_types(self, served: Sequence[str]) -> list[str]:
        """Job types of pending jobs that none of `served` covers (they stay pending)."""
        params = {"status": "eq.pending"}
        if served:
            params["job_type"] = "not." + in_list(served)
        rows = self.rest.select("jobs", params, columns="job_type", limit=500)
        return sorted({str(r["job_type"]) for r in rows})

    def check_schema_columns(self) -> None:
        """Raise when the columns this executor uses are missing (0001/0002 not fully applied)."""
        self.rest.select("jobs", columns="id,executor_id,claim_token,lease_expires_at,claim_seq", limit=1)
        self.rest.select("executor_heartbeats", columns="executor_id,last_seen_at,startup_time", limit=1)

    # -- heartbeat and settings ----------------------------------------------------------------
    def heartbeat(self, row: Mapping[str, Any]) -> Peer | None:
        """Write this executor's heartbeat row (last_seen_at = the database's now()). Returns the
        other live process sharing this executor id, when its heartbeat is under 30 s old."""
        rows = self.rest.rpc("executor_heartbeat", {"p_row": dict(row)}, idempotent=True)
        for r in rows or []:
            if r.get("other_live"):
                return Peer(
                    hostname=r.get("other_hostname"),
                    startup_time=r.get("other_startup_time"),
                    seen_seconds_ago=float(r.get("other_seen_seconds_ago") or 0.0),
                )
        return None

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


def schema_error(exc: PostgrestError) -> ConfigError:
    """A call hit a missing function or column: the migration is not applied (exit 2, naming it)."""
    return ConfigError(
        f"the DSM database lacks what the executor needs ({exc.remote_message or exc.pg_code}): "
        f"apply {MIGRATION_FILE}",
        hint=f"Apply supabase/migrations/0001_dsm_schema.sql and {MIGRATION_FILE}, then run "
        "job-executor.py --check.",
    )


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

    def select(
        self, table: str, params: Mapping[str, str], *, columns: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of an allowed table (HANDLER_READABLE), allowed columns only (default: all of
        them). Columns come from `columns` or params["select"]; filters and order must name
        allowed columns too, so a secret column cannot even be probed through a filter."""
        allowed = HANDLER_READABLE.get(table)
        if allowed is None:
            raise ValueError(
                f"handlers may not read {table!r} (readable: {', '.join(sorted(HANDLER_READABLE))}); "
                "job state goes through ctx, credentials through ctx.credentials_for"
            )
        query: list[tuple[str, str]] = []
        for key, value in params.items():
            if key == "select":
                columns = value
            elif key in _PAGING_KEYS:
                query.append((key, value))
            elif key == "order":
                _require_columns(table, allowed, [p.split(".", 1)[0] for p in value.split(",")])
                query.append((key, value))
            else:
                _require_columns(table, allowed, [key])
                query.append((key, value))
        wanted = [c.strip() for c in (columns or "").split(",") if c.strip()] or sorted(allowed)
        _require_columns(table, allowed, wanted)
        return self._rest.select(table, query, columns=",".join(wanted))

    def insert(self, table: str, rows: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[dict]:
        if table in HANDLER_UNWRITABLE:
            raise ValueError(f"handlers do not insert into {table}: use ctx or a named store method")
        return self._rest.insert(table, rows)

    # -- the sync jobs (openmanage_sync, vcenter_sync): named operations, lib/sync/table_sink.py.
    # Connection settings come back with the password already decrypted here; the encryption key
    # and the stored (encrypted) values never reach the handler.
    def openmanage_connection(self) -> OmeConnection:
        from lib.sync.table_sink import read_ome_connection

        return read_ome_connection(self._rest, self._encryption_key)

    def vcenter_connections(self, ids: Sequence[str] | None) -> list[VcenterConnection]:
        """vcenters by id, or (None) every vcenters row with sync_enabled."""
        from lib.sync.table_sink import read_vcenter_connections

        return read_vcenter_connections(self._rest, ids, self._encryption_key)

    def ome_table_sink(self) -> OmeTableSink:
        from lib.sync.table_sink import OmeTableSink

        return OmeTableSink(self._rest)

    def vcenter_table_sink(self, vcenter_id: str) -> VcenterTableSink:
        from lib.sync.table_sink import VcenterTableSink

        return VcenterTableSink(self._rest, vcenter_id)

    def record_vcenter_sync(self, vcenter_id: str, status: str, error: str | None) -> None:
        from lib.sync.table_sink import record_vcenter_sync

        record_vcenter_sync(self._rest, vcenter_id, status, error)

    def _encryption_key(self) -> str | None:
        return self._jobs.activity_settings().get("encryption_key")


def _require_columns(table: str, allowed: frozenset[str], names: Sequence[str]) -> None:
    bad = [n for n in names if n.strip() not in allowed]
    if bad:
        raise ValueError(f"handlers may not read {table}.{', '.join(bad)} (not in HANDLER_READABLE)")
