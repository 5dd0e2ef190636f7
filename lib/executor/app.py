"""Wiring for job-executor.py: settings -> clients -> daemon, and the --check report."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import handlers as registry
from lib.config import Env, dsm_settings, executor_settings
from lib.dsm.credentials import CredentialResolver
from lib.dsm.rest import RestClient
from lib.errors import AgentError, AuthError, ConfigError
from lib.executor.context import IdracSlots, Services
from lib.executor.daemon import Daemon
from lib.executor.settings import handler_settings
from lib.executor.store import MIGRATION_FILE, SCHEMA_VERSION, HandlerStoreImpl, JobStore

log = logging.getLogger(__name__)


@dataclass
class Built:
    daemon: Daemon
    rest: RestClient
    store: JobStore


def build(env: Env, *, once: bool = False) -> Built:
    """Read and validate every setting (all problems at once), then build the daemon."""
    dsm = dsm_settings(env, need_service_role=True)
    ex = executor_settings(env)
    handler_cfg = handler_settings(env)  # IDRAC_*, POWER_*: read here, once, from this Env
    env.check()
    extra = registry.load_extra(ex.extra_handlers) if ex.extra_handlers else []
    if extra:
        log.warning("EXECUTOR_EXTRA_HANDLERS registered %s (test/bench hook)", ", ".join(extra))
    rest = RestClient(dsm.supabase_url or "", dsm.service_role_key or "", dsm.tls)
    store = JobStore(rest, ex.executor_id, lease_seconds=ex.lease_seconds)
    services = Services(
        store=store,
        handler_store=HandlerStoreImpl(rest, store),
        resolver=CredentialResolver(
            rest, default_user=handler_cfg.idrac.user, default_password=handler_cfg.idrac.password
        ),
        idrac_slots=IdracSlots(4),
        executor_id=ex.executor_id,
        settings=handler_cfg,
    )
    return Built(Daemon(ex, store, services, once=once), rest, store)


def check(built: Built) -> list[tuple[str, bool, str]]:
    """(item, ok, detail) rows: configuration, backend, key, migrations, handlers."""
    from lib.checks import Endpoint, endpoint_rows

    rows: list[tuple[str, bool, str]] = [("configuration", True, "all variables valid")]
    d, store = built.daemon, built.store
    # DNS, TCP and TLS first (lib.checks, shared with the syncs): the first thing to fix, with its hint
    backend = Endpoint.from_url(
        built.rest.base_url, setting="SUPABASE_URL", system="the DSM backend", tls=built.rest.http.tls
    )
    rows.extend(endpoint_rows(backend, "backend"))
    try:
        version = store.schema_version()
        rows.append(("backend reachable", True, built.rest.base_url))
        rows.append(("service-role key", True, "accepted"))
        if version is None or version < SCHEMA_VERSION:
            rows.append(("migrations", False, f"executor functions missing: apply {MIGRATION_FILE}"))
        else:
            try:
                built.rest.select("jobs", columns="id,executor_id,claim_token,lease_expires_at", limit=1)
                built.rest.select("executor_heartbeats", columns="executor_id", limit=1)
                rows.append(("migrations", True, f"schema version {version}"))
            except AgentError as exc:
                rows.append(
                    (
                        "migrations",
                        False,
                        f"{exc}: apply supabase/migrations/0001_dsm_schema.sql and {MIGRATION_FILE}",
                    )
                )
    except AuthError as exc:
        rows.append(("backend reachable", True, built.rest.base_url))
        rows.append(("service-role key", False, str(exc)))
    except AgentError as exc:
        rows.append(("backend reachable", False, f"{exc} ({exc.hint})" if exc.hint else str(exc)))
    rows.append(("job types served", bool(d.job_types), ", ".join(d.job_types) or "none"))
    for jt, why in sorted(registry.broken_types().items()):
        rows.append((f"handler {jt}", False, f"cannot load: {why} (its jobs stay pending)"))
    if d.unknown_configured:
        rows.append(("EXECUTOR_JOB_TYPES", False, "no handler for: " + ", ".join(d.unknown_configured)))
    if all(ok for name, ok, _ in rows if name in ("backend reachable", "service-role key", "migrations")):
        try:
            unhandled = d._unhandled_pending()
            rows.append(
                (
                    "pending jobs without a handler here",
                    True,
                    ", ".join(unhandled) + " (left pending)" if unhandled else "none",
                )
            )
        except AgentError as exc:
            rows.append(("pending jobs without a handler here", False, str(exc)))
    return rows


def check_exit_code(rows: list[tuple[str, bool, str]]) -> int:
    """0 when everything the executor needs is in place; else the code of the first blocker."""
    names = {name: ok for name, ok, _ in rows}
    if not names.get("backend reachable", False):
        return 4
    if not names.get("service-role key", False):
        return 3
    if not names.get("migrations", False):
        return 2
    return 0


__all__ = ["Built", "ConfigError", "build", "check", "check_exit_code"]
