"""openmanage_sync and vcenter_sync: the two inventory syncs as executor jobs.

One code path (ARCHITECTURE.md principle 1): the jobs run the very functions the scripts run,
lib.sync.ome.sync_ome and lib.sync.vcenter.sync_vcenter; only the sink differs. The scripts deliver
through the edge functions; a job writes the same rows straight into the tables
(lib/sync/table_sink.py, through ctx.store's named sync methods, service-role key).

Connections come from DSM's tables, read and decrypted inside the executor by ctx.store:
openmanage_settings (host, port, username, password plain or encrypted, verify_ssl, sync_enabled)
and vcenters (password_encrypted). CA bundles and batch/page sizes come from the executor's own
settings (OME_CA_BUNDLE, VCENTER_CA_BUNDLE, OME_PAGE_SIZE, ...: ctx.settings.sync).

Nothing is ever deleted. Progress: one console line per page / batch; ctx.check() between them,
so a cancel stops the sync at the next page or batch (what was saved stays saved).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from handlers.base import Handler, InvalidJobInput, Job, JobContext
from lib.config import OmeSettings, VcenterSettings
from lib.errors import AgentError, AuthError, ConfigError, PartialError, TLSError
from lib.executor.errors import Interrupted
from lib.executor.models import parse_ids
from lib.http import TLSConfig
from lib.logs import redact
from lib.sync.common import Item, Progress, SyncReport
from lib.sync.delivery import BatchOutcome

log = logging.getLogger(__name__)

MAX_LISTED = 25  # failures named in details.error; details.result lists all of them


class JobProgress(Progress):
    """The sync's progress hook, turned into the job's progress, console lines and cancel checks."""

    def __init__(self, ctx: JobContext, label: str, *, start: float = 0.0, span: float = 100.0) -> None:
        super().__init__(label, enabled=False)
        self.ctx, self.start, self.span = ctx, start, span

    def update(self, done: int, total: int | None = None) -> None:
        self.ctx.check()  # between pages / batches: a cancel stops the sync here
        if total:
            self.ctx.progress(self.start + self.span * min(done, total) / total)
        self.ctx.log(f"{self.label}: {done}" + (f" of {total}" if total else ""))

    def done(self) -> None:
        """Nothing to close: the console log needs no end-of-line."""


def job_sender(
    ctx: JobContext, send: Callable[[list[Any]], BatchOutcome], what: str
) -> Callable[[list[Any]], BatchOutcome]:
    """Wrap a table sink's send: a cancel check before each batch and one console line after it."""

    def sender(batch: list[Any]) -> BatchOutcome:
        ctx.check()
        outcome = send(batch)
        if outcome.ok:
            ctx.log(
                f"{what}: batch of {len(batch)} saved ({outcome.new} new, {outcome.updated} updated, "
                f"{outcome.auto_linked} linked)"
            )
        else:
            ctx.log(f"{what}: batch of {len(batch)} refused ({outcome.message}); isolating", "WARN")
        return outcome

    return sender


def listed(items: list[Item]) -> str:
    names = "; ".join(f"{i.ident}: {i.reason}" for i in items[:MAX_LISTED])
    more = f"; and {len(items) - MAX_LISTED} more (details.result)" if len(items) > MAX_LISTED else ""
    return names + more


def _flag(job: Job, name: str) -> bool:
    value = (job.details or {}).get(name, False)
    if not isinstance(value, bool):
        raise InvalidJobInput(f"details.{name}", f"must be true or false, not {value!r}")
    return value


def _for_job(exc: AgentError, where: str, tls_setting: str) -> AgentError:
    """The same error with a hint that speaks of DSM's settings rows, not the scripts' variables."""
    if isinstance(exc, AuthError):
        exc.hint = f"Check the user name and password in {where} (and that the account is not locked)."
    elif isinstance(exc, TLSError):
        exc.hint = (
            f"Set {tls_setting} in the executor's environment to the CA that signed the certificate, "
            f"or turn verify_ssl off in {where}."
        )
    return exc


def run_reported(
    ctx: JobContext, report: SyncReport, work: Callable[[], Any], *, where: str, tls_setting: str
) -> Any:
    """Run one sync with its report in details.result, also when it fails half-way."""
    started = time.monotonic()
    try:
        return work()
    except AgentError as exc:
        report.fail(exc)
        if isinstance(exc, Interrupted):
            raise
        raise _for_job(exc, where, tls_setting) from None
    except BaseException as exc:
        report.fail(exc)
        raise
    finally:
        report.elapsed_seconds = round(time.monotonic() - started, 3)
        ctx.set_result(**report.to_dict())


# ---------------------------------------------------------------------------------------------------
# openmanage_sync
# ---------------------------------------------------------------------------------------------------
class OpenManageSyncHandler(Handler):
    """details: force (run although openmanage_settings.sync_enabled is false), inventory (BIOS,
    CPU, memory per device), include_chassis. target_scope is not used."""

    job_types = ("openmanage_sync",)

    def validate(self, job: Job) -> dict[str, Any]:
        return {
            "force": _flag(job, "force"),
            "inventory": _flag(job, "inventory"),
            "include_chassis": _flag(job, "include_chassis"),
        }

    def preflight(self, ctx: JobContext, params: dict[str, Any]) -> None:
        conn = ctx.store.openmanage_connection()  # ConfigError naming the missing column
        if not conn.sync_enabled and not params["force"]:
            raise ConfigError(
                "OpenManage sync is disabled (openmanage_settings.sync_enabled is false)",
                hint="Enable the sync in DSM's OpenManage settings, or create the job with details.force = true.",
            )
        ctx.log(
            f"OpenManage Enterprise {conn.host}:{conn.port} as {conn.username} "
            f"(password {conn.password_source}, verify_ssl {conn.verify_ssl})"
        )
        params["conn"] = conn

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        from lib.sync.ome import OmeSyncOptions, sync_ome

        conn, cfg = params["conn"], ctx.settings.sync
        ome = OmeSettings(
            host=conn.host,
            port=conn.port,
            username=conn.username,
            password=conn.password,
            tls=TLSConfig(verify=conn.verify_ssl, ca_bundle=cfg.ome_ca_bundle, env_prefix="OME"),
            page_size=cfg.ome_page_size,
            timeout=cfg.ome_timeout,
            inventory_threads=cfg.ome_inventory_threads,
            batch_size=cfg.ome_batch_size,
        )
        options = OmeSyncOptions(
            include_chassis=params["include_chassis"],
            inventory=params["inventory"],
            batch_size=cfg.ome_batch_size,
            scheduled=True,
        )
        report = SyncReport("OpenManage")
        send = job_sender(ctx, ctx.store.ome_table_sink().send, "servers")
        with ctx.step("sync OpenManage devices into servers", retry_safe=True):  # upserts: idempotent
            run_reported(
                ctx,
                report,
                lambda: sync_ome(ome, send, options, report, progress=JobProgress(ctx, "OME pages read")),
                where="DSM's OpenManage settings (openmanage_settings)",
                tls_setting="OME_CA_BUNDLE",
            )
        ctx.log(report.render_text().splitlines()[0])
        if report.failed:
            raise PartialError(
                f"partial sync: {len(report.failed)} device(s) or page(s) not saved "
                f"(everything else was saved): {listed(report.failed)}"
            )


# ---------------------------------------------------------------------------------------------------
# vcenter_sync
# ---------------------------------------------------------------------------------------------------
class VcenterSyncHandler(Handler):
    """target_scope {"vcenter_ids": [...]} (those vCenters, whatever their sync_enabled), or none /
    {"type": "all"} (every vcenters row with sync_enabled). One vCenter after the other; each one's
    outcome goes to its vcenters row and to details.result.vcenters (job_tasks rows name servers or
    vCenter hosts only, so there is no task row per vCenter)."""

    job_types = ("vcenter_sync",)

    def validate(self, job: Job) -> dict[str, Any]:
        scope: Mapping[str, Any] = job.target_scope or {}
        details: Mapping[str, Any] = job.details or {}
        ids = parse_ids(scope.get("vcenter_ids")) or parse_ids(scope.get("vcenter_id"))
        ids = ids or parse_ids(details.get("vcenter_ids")) or parse_ids(details.get("vcenter_id"))
        return {"ids": list(dict.fromkeys(ids)) or None}

    def preflight(self, ctx: JobContext, params: dict[str, Any]) -> None:
        ids = params["ids"]
        conns = ctx.store.vcenter_connections(ids)
        if ids is not None:
            missing = sorted(set(ids) - {c.id for c in conns})
            if missing:
                raise InvalidJobInput("target_scope.vcenter_ids", f"no vCenter with id {', '.join(missing)}")
        elif not conns:
            raise ConfigError(
                "no vCenter to sync: no vcenters row has sync_enabled",
                hint="Add a vCenter in DSM (or enable its sync), or name it in target_scope.vcenter_ids.",
            )
        for c in conns:
            ctx.log(
                f"vCenter {c.label}: " + (f"cannot sync: {c.problem}" if c.problem else f"as {c.username}")
            )
        params["conns"] = conns

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        conns = params["conns"]
        results: list[dict[str, Any]] = []
        errors: list[AgentError] = []
        for i, conn in enumerate(conns):
            span = 100.0 / len(conns)
            with ctx.step(f"sync vCenter {conn.label}", retry_safe=True):
                entry, error = self._one(ctx, conn, start=i * span, span=span)
            results.append(entry)
            errors += [error] if error is not None else []
            ctx.set_result(vcenters=results)
        bad = [r for r in results if r["status"] != "success"]
        if bad:
            if len(results) == 1 and errors:
                raise errors[0]  # one vCenter: its own error, with its hint
            raise PartialError(
                f"{len(bad)} of {len(results)} vCenter(s) not fully synced: "
                + "; ".join(f"{r['name']}: {r['status']}: {r['error']}" for r in bad)
            )

    def _one(
        self, ctx: JobContext, conn: Any, *, start: float, span: float
    ) -> tuple[dict[str, Any], AgentError | None]:
        """Sync one vCenter and record its outcome on its vcenters row; Interrupted propagates."""
        from lib.sync.vcenter import VcenterSyncOptions, sync_vcenter

        cfg = ctx.settings.sync
        report = SyncReport("vCenter")
        entry: dict[str, Any] = {"vcenter_id": conn.id, "name": conn.name, "host": conn.host}
        exception: AgentError | None = None
        if conn.problem:
            report.error = conn.problem
            exception = ConfigError(f"vCenter {conn.label}: {conn.problem}")
        else:
            vc = VcenterSettings(
                host=conn.host,
                port=conn.port,
                user=conn.username,
                password=conn.password,
                tls=TLSConfig(verify=conn.verify_ssl, ca_bundle=cfg.vcenter_ca_bundle, env_prefix="VCENTER"),
                vcenter_id=conn.id,
                batch_size=cfg.vcenter_batch_size,
            )
            options = VcenterSyncOptions(
                batch_size=cfg.vcenter_batch_size, vcenter_id=conn.id, job_id=ctx.job.id
            )
            send = job_sender(ctx, ctx.store.vcenter_table_sink(conn.id).send, f"vCenter {conn.name} hosts")
            progress = JobProgress(ctx, f"vCenter {conn.name} hosts saved", start=start, span=span)
            ctx.check()
            started = time.monotonic()
            try:
                inv = sync_vcenter(vc, lambda _inv: send, options, report, progress=progress)
                ctx.log(
                    f"vCenter {conn.name}: {len(inv.datacenters)} datacenter(s), {len(inv.clusters)} cluster(s), "
                    f"{len(inv.hosts)} host(s)"
                )
            except Interrupted as exc:
                report.fail(exc)
                self._record(ctx, conn, "failed", f"sync interrupted: {exc.message}")
                raise
            except AgentError as exc:
                report.fail(exc)
                exception = _for_job(exc, f"DSM's vCenter settings ({conn.name})", "VCENTER_CA_BUNDLE")
            except Exception as exc:  # a bug in one vCenter's sync must not skip the others
                report.fail(exc)  # "unexpected <type>: <redacted text>"
                log.error("vCenter %s: sync failed: %s", conn.label, report.error)
                exception = AgentError(f"vCenter {conn.label}: {report.error}")
            finally:
                report.elapsed_seconds = round(time.monotonic() - started, 3)
        status = report.status
        error = (
            report.error if status == "failed" else (listed(report.failed) if status == "partial" else None)
        )
        self._record(ctx, conn, status, error)
        ctx.log(
            f"vCenter {conn.name}: {status}" + (f": {error}" if error else ""),
            "INFO" if status == "success" else "ERROR",
        )
        entry.update(status=status, error=error, report=report.to_dict())
        return entry, exception

    @staticmethod
    def _record(ctx: JobContext, conn: Any, status: str, error: str | None) -> None:
        try:
            ctx.store.record_vcenter_sync(conn.id, status, redact(error) if error else None)
        except AgentError as exc:  # the sync's own outcome matters more than this bookkeeping row
            ctx.log(f"vCenter {conn.name}: could not record last_sync_status: {exc.message}", "WARN")
