"""health_check: read each target's Redfish health and record it.

Per server: system Status (Health, HealthRollup), power state, fans and temperatures (chassis
Thermal or ThermalSubsystem), power supplies (Power or PowerSubsystem), storage controllers.
Writes servers.overall_health, power_state and last_health_check, and puts a per-server summary
with every component that is not OK into the job's details.result.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from handlers.base import Handler, Job, JobContext, Server, TaskHandle
from handlers.common import run_on_targets
from lib.redfish import client_for


class HealthCheckHandler(Handler):
    job_types = ("health_check",)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        return {}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        run_on_targets(
            ctx,
            "health check",
            lambda s, t: self.one(ctx, s, t),
            retry_safe=True,
            summarize=lambda done: {"unhealthy": [s["server"] for s in done if s["overall_health"] != "OK"]},
        )

    def one(self, ctx: JobContext, server: Server, task: TaskHandle) -> dict[str, Any]:
        creds = ctx.credentials_for(server)
        with client_for(ctx, server, creds) as bmc:
            report = bmc.health()
        now = dt.datetime.now(dt.UTC).isoformat()
        overall = report.overall
        ctx.store.update_server(
            server.id, overall_health=overall, power_state=report.power_state, last_health_check=now
        )
        problems = [{"component": c.kind, "name": c.name, "health": c.health} for c in report.problems]
        for p in problems:
            task.log(f"{p['component']} {p['name']}: {p['health']}", "WARN")
        task.log(f"health {overall}, power {report.power_state}, {len(report.components)} components read")
        return {
            "server_id": server.id,
            "server": server.label,
            "overall_health": overall,
            "health": report.health,
            "health_rollup": report.health_rollup,
            "power_state": report.power_state,
            "components_checked": len(report.components),
            "problems": problems,
        }
