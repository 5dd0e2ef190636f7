"""Read-only iDRAC jobs: firmware_inventory_scan, bios_config_read, fetch_event_logs.

Every Redfish call here is a GET (lib/redfish.py read helpers); nothing is written to the BMC.
Per server, one job_tasks row (run_on_targets); what was read goes to details.result.servers[].

Size: details is a jsonb column the UI reads on every poll, so one job's result is bounded to
RESULT_BUDGET_BYTES (the wrapper included), shared equally by its servers; a server whose list
does not fit keeps the first items (newest log entries, components and attributes in their order)
and says so in `truncated` ({"kept", "total", "note"}). Name lists (`withheld`, `missing`) keep at
most MAX_NAMES names, with the full count beside them.

Secrets: BIOS attributes whose name looks secret (lib.redfish.SECRET_NAME: passw, secret, chap,
passphrase, psk, ...key), or that the BIOS attribute registry types "Password", are never stored;
their names are listed in `withheld`. The name rule holds when the registry cannot be read.
"""

from __future__ import annotations

import json
from typing import Any

from handlers.base import Handler, InvalidJobInput, Job, JobContext, Server, TaskHandle
from handlers.common import run_on_targets
from lib.errors import RemoteError
from lib.redfish import (
    HINTS,
    bios_attributes,
    client_for,
    firmware_inventory,
    is_secret_attribute,
    log_entries,
    log_entries_path,
    newest_first,
)

RESULT_BUDGET_BYTES = 256_000  # the whole details.result of one job, all servers together
WRAPPER_BYTES = 2_000  # details.result's own keys (logs, limit, failed/servers list syntax)
MAX_NAMES = 200  # names kept in `withheld` / `missing` (details.attributes is user input, unbounded)
LOG_KINDS = ("sel", "lifecycle")
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


def _size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def fit(summary: dict[str, Any], key: str, budget: int) -> dict[str, Any]:
    """Trim summary[key] (a list or a dict, in its order) until the summary fits `budget` bytes
    of JSON; when trimmed, `truncated` says how many were kept of how many and why."""
    if _size(summary) <= budget:
        return summary
    items = summary[key]
    total = len(items)

    def keep(n: int) -> dict[str, Any]:
        part = items[:n] if isinstance(items, list) else dict(list(items.items())[:n])
        note = (
            f"only {n} of {total} {key} kept: one job's result is limited to {RESULT_BUDGET_BYTES} bytes, "
            f"{budget} per server here; run the job for fewer servers (or a smaller limit) to see more"
        )
        return {**summary, key: part, "truncated": {"kept": n, "total": total, "note": note}}

    lo, hi = 0, total  # the largest n that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _size(keep(mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    out = keep(lo)
    if _size(out) <= budget:
        return out
    # Even with none of `key` left the rest is too big (many servers, long names): keep only the
    # identity and a short note, whatever the other fields were.
    empty = [] if isinstance(items, list) else {}
    note = f"result too large for {budget} bytes per server: run the job for fewer servers"
    return {**_base_of(summary), key: empty, "truncated": {"kept": 0, "total": total, "note": note}}


def _base_of(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("server_id", "server") if k in summary}


def capped(names: list[str]) -> list[str]:
    """At most MAX_NAMES names (the caller stores the full count beside them)."""
    return names[:MAX_NAMES]


def _budget(ctx: JobContext) -> int:
    """Bytes one server's summary may take: the job's budget less the wrapper, shared equally,
    less the ", " that joins list items."""
    n = max(1, len(ctx.targets()))
    return max(200, (RESULT_BUDGET_BYTES - WRAPPER_BYTES) // n - 2)


def _base(server: Server) -> dict[str, Any]:
    return {"server_id": server.id, "server": server.label}


class FirmwareInventoryScanHandler(Handler):
    """Installed firmware per server (name, version, updateable); servers.bios_version and
    servers.idrac_firmware from the system's BiosVersion and the manager's FirmwareVersion."""

    job_types = ("firmware_inventory_scan",)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        return {}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        budget = _budget(ctx)
        run_on_targets(ctx, "firmware inventory", lambda s, t: self.one(ctx, s, t, budget), retry_safe=True)

    def one(self, ctx: JobContext, server: Server, task: TaskHandle, budget: int) -> dict[str, Any]:
        creds = ctx.credentials_for(server)
        with client_for(ctx, server, creds) as bmc:
            components = firmware_inventory(bmc)
            ctx.check()
            bios = bmc.system().get("BiosVersion")
            idrac = bmc.get(bmc.manager_path(), what="reading the manager").get("FirmwareVersion")
        columns = {k: v for k, v in (("bios_version", bios), ("idrac_firmware", idrac)) if v}
        if columns:
            ctx.store.update_server(server.id, **columns)
        task.log(f"{len(components)} firmware components read; BIOS {bios or '?'}, iDRAC {idrac or '?'}")
        summary = {
            **_base(server),
            "bios_version": bios,
            "idrac_firmware": idrac,
            "component_count": len(components),
            "components": [
                {"name": c.name, "version": c.version, "updateable": c.updateable, "id": c.id}
                for c in components
            ],
        }
        return fit(summary, "components", budget)


class BiosConfigReadHandler(Handler):
    """Current BIOS attributes per server, optionally only `details.attributes` (a list of names).
    Password attributes are never stored (see the module doc)."""

    job_types = ("bios_config_read",)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        wanted = job.details.get("attributes")
        if wanted is not None and (
            not isinstance(wanted, list | tuple) or not all(isinstance(n, str) and n for n in wanted)
        ):
            raise InvalidJobInput("details.attributes", "must be a list of BIOS attribute names")
        return {"attributes": list(wanted) if wanted else None}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        budget = _budget(ctx)
        run_on_targets(
            ctx, "BIOS attributes read", lambda s, t: self.one(ctx, s, t, params, budget), retry_safe=True
        )

    def one(
        self, ctx: JobContext, server: Server, task: TaskHandle, params: dict[str, Any], budget: int
    ) -> dict[str, Any]:
        creds = ctx.credentials_for(server)
        with client_for(ctx, server, creds) as bmc:
            system = bmc.system()
            read = bios_attributes(bmc, system)
        attrs: dict[str, Any] = read["attributes"]
        wanted = params.get("attributes")
        missing: list[str] = []
        if wanted:
            missing = [n for n in wanted if n not in attrs]
            attrs = {n: attrs[n] for n in wanted if n in attrs}
        withheld = sorted(n for n in attrs if is_secret_attribute(n, read["password_names"]))
        kept = {n: v for n, v in sorted(attrs.items()) if n not in withheld}
        bios = system.get("BiosVersion")
        if bios:
            ctx.store.update_server(server.id, bios_version=bios)
        task.log(
            f"{len(kept)} BIOS attributes read, {len(withheld)} password attributes withheld"
            + (f", {len(missing)} not found: {', '.join(missing[:20])}" if missing else "")
        )
        if not read["registry_read"]:
            task.log(
                "BIOS attribute registry not readable: password attributes recognised by name only", "WARN"
            )
        summary = {
            **_base(server),
            "bios_version": bios,
            "attribute_count": len(kept),
            "withheld": capped(withheld),
            "withheld_count": len(withheld),
            "missing": capped(missing),
            "missing_count": len(missing),
            "registry_read": read["registry_read"],
            "attributes": kept,
        }
        return fit(summary, "attributes", budget)


class FetchEventLogsHandler(Handler):
    """The newest entries of the SEL and/or Dell's Lifecycle log per server.
    details.log: "sel" (default) | "lifecycle" | "both"; details.limit: entries per log (100)."""

    job_types = ("fetch_event_logs",)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        which = job.details.get("log") or "sel"
        if which not in (*LOG_KINDS, "both"):
            raise InvalidJobInput("details.log", f"must be sel, lifecycle or both, not {which!r}")
        limit = job.details.get("limit", DEFAULT_LIMIT)
        if limit is None:
            limit = DEFAULT_LIMIT
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidJobInput("details.limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        return {"kinds": list(LOG_KINDS) if which == "both" else [which], "limit": limit}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        budget = _budget(ctx)
        run_on_targets(
            ctx,
            "event log read",
            lambda s, t: self.one(ctx, s, t, params, budget),
            retry_safe=True,
            logs=params["kinds"],
            limit=params["limit"],
        )

    def one(
        self, ctx: JobContext, server: Server, task: TaskHandle, params: dict[str, Any], budget: int
    ) -> dict[str, Any]:
        creds = ctx.credentials_for(server)
        entries: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        errors: dict[str, str] = {}
        kinds = params["kinds"]
        with client_for(ctx, server, creds) as bmc:
            for kind in kinds:
                ctx.check()
                try:
                    got = self._read(bmc, server, kind, params["limit"])
                except RemoteError as exc:
                    # With both logs asked for, one the BMC lacks (no Lifecycle log) must not hide
                    # the other: say so per log; the server fails only when no log could be read.
                    if len(kinds) == 1 or len(errors) == len(kinds) - 1:
                        raise
                    errors[kind] = str(exc)
                    task.log(f"{kind} log not read: {exc}", "WARN")
                    continue
                counts[kind] = len(got)
                entries += [{"log": kind, **e} for e in got]
                task.log(f"{len(got)} {kind} log entries read")
        summary = {**_base(server), "counts": counts, "entries": newest_first(entries)}
        if errors:
            summary["errors"] = errors
        return fit(summary, "entries", budget)

    @staticmethod
    def _read(bmc: Any, server: Server, kind: str, limit: int) -> list[dict[str, Any]]:
        path = log_entries_path(bmc, kind)
        if path is None:
            raise RemoteError(f"iDRAC {server.ip_address}: no {kind} log service", hint=HINTS["missing"])
        return log_entries(bmc, path, limit)
