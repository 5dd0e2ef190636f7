"""Wiring for job-executor.py: settings -> clients -> daemon, and the --check report."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import handlers as registry
from lib.config import Env, dsm_settings, executor_settings
from lib.dsm.credentials import CredentialResolver
from lib.dsm.rest import RestClient
from lib.errors import EXIT_OK, AgentError, AuthError, ConfigError, ConnectivityError, exit_code_for
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
    extra_handlers: str | None = None  # EXECUTOR_EXTRA_HANDLERS as set (a test/bench hook)
    extra_types: tuple[str, ...] = ()


def build(env: Env, *, once: bool = False) -> Built:
    """Read and validate every setting (all problems at once), then build the daemon."""
    dsm = dsm_settings(env, need_service_role=True)
    ex = executor_settings(env)
    handler_cfg = handler_settings(env)  # IDRAC_*, POWER_*: read here, once, from this Env
    env.check()
    extra = registry.load_extra(ex.extra_handlers) if ex.extra_handlers else []  # ConfigError if bad
    if ex.extra_handlers:
        log.warning("%s", extra_handlers_note(ex.extra_handlers, extra))
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
    return Built(Daemon(ex, store, services, once=once), rest, store, ex.extra_handlers or None, tuple(extra))


def extra_handlers_note(spec: str, job_types: list[str] | tuple[str, ...]) -> str:
    """One line saying EXECUTOR_EXTRA_HANDLERS is set, what it loaded and what it serves: it imports
    code named in the environment, so it must never go unnoticed on a production executor."""
    modules = registry.extra_modules()
    loaded = ", ".join(f"{name} ({path})" for name, path in sorted(modules.items())) or "none"
    return (
        f"EXECUTOR_EXTRA_HANDLERS is set to {spec!r} (test/bench hook, not for production): "
        f"loaded modules {loaded}; job types {', '.join(job_types) or 'none'}"
    )


@dataclass(frozen=True)
class Row:
    """One line of the --check list; `error` is the class whose exit code a failure maps to."""

    name: str
    ok: bool
    detail: str
    error: type[AgentError] = ConfigError
    warn: bool = False  # shown as WARN; not a failure (the exit code ignores it)


def check(built: Built) -> list[Row]:
    """The --check list, one row per item and one FAIL row per problem: configuration, backend
    (DNS, TCP, TLS, then the key and the migrations, only when it is reachable), job types, handlers."""
    from lib.checks import Endpoint, endpoint_rows

    rows: list[Row] = [Row("configuration", True, "all variables valid")]
    d, store = built.daemon, built.store
    # DNS, TCP and TLS first (lib.checks, shared with the syncs): the first thing to fix, with its hint
    backend = Endpoint.from_url(
        built.rest.base_url, setting="SUPABASE_URL", system="the DSM backend", tls=built.rest.http.tls
    )
    probes = endpoint_rows(backend, "backend")
    rows.extend(Row(name, ok, detail, ConnectivityError) for name, ok, detail in probes)
    reachable = all(ok for _, ok, _ in probes)
    backend_ok = False
    if reachable:  # an unreachable backend is reported once, by the probe that failed
        try:
            version = store.schema_version()
            rows.append(Row("service-role key", True, f"accepted by {built.rest.base_url}"))
            if version is None or version < SCHEMA_VERSION:
                rows.append(
                    Row(
                        "migrations",
                        False,
                        f"executor schema version {version}, need {SCHEMA_VERSION}: apply {MIGRATION_FILE}",
                    )
                )
            else:
                try:
                    store.check_schema_columns()
                    rows.append(Row("migrations", True, f"schema version {version}"))
                    backend_ok = True
                except AgentError as exc:
                    rows.append(
                        Row(
                            "migrations",
                            False,
                            f"{exc}: apply supabase/migrations/0001_dsm_schema.sql and {MIGRATION_FILE}",
                        )
                    )
        except AuthError as exc:
            rows.append(Row("service-role key", False, str(exc), AuthError))
        except AgentError as exc:
            rows.append(
                Row("backend answers", False, f"{exc} ({exc.hint})" if exc.hint else str(exc), type(exc))
            )
    rows.append(
        Row(
            "job types served",
            bool(d.job_types),
            ", ".join(d.job_types) or "none: this executor would claim nothing",
        )
    )
    if built.extra_handlers:
        note = extra_handlers_note(built.extra_handlers, built.extra_types)
        rows.append(
            Row("EXECUTOR_EXTRA_HANDLERS", True, note.removeprefix("EXECUTOR_EXTRA_HANDLERS "), warn=True)
        )
    for jt, why in sorted(registry.broken_types().items()):
        rows.append(Row(f"handler {jt}", False, f"cannot load: {why} (its jobs stay pending)"))
    if d.unknown_configured:
        rows.append(Row("EXECUTOR_JOB_TYPES", False, "no handler for: " + ", ".join(d.unknown_configured)))
    if backend_ok:
        try:
            unhandled = store.unhandled_pending_types(d.job_types)
            detail = ", ".join(unhandled) + " (left pending)" if unhandled else "none"
            rows.append(Row("pending jobs without a handler here", True, detail))
        except AgentError as exc:
            rows.append(Row("pending jobs without a handler here", False, str(exc), type(exc)))
    return rows


def check_exit_code(rows: list[Row]) -> int:
    """0 when every row is ok; else the exit code (lib.errors) of the first failing row."""
    for row in rows:
        if not row.ok:
            return exit_code_for(row.error("check failed"))
    return EXIT_OK


__all__ = ["Built", "ConfigError", "Row", "build", "check", "check_exit_code"]
