"""Handlers for tests and benchmarks (NOT production): registered in executor processes through
EXECUTOR_EXTRA_HANDLERS=tests.executor.lab_handlers:HANDLERS, or in-process with handlers.register.

They use job types of the DSM enum that no real handler here serves yet, so they never shadow one.
Each run leaves a side effect in the database (an idrac_commands row with command_type
"lab_run", buffered like every audit row), so tests can count how many times a job really ran.
With details.exactly_once, LightHandler also inserts a row into the table `lab_runs` (job_id
PRIMARY KEY, created by the test) synchronously, before the job can complete: a second run of a job
is a unique violation, so the job fails visibly.
"""

from __future__ import annotations

import numbers
from typing import Any

from handlers.base import Handler, InvalidJobInput, Job, JobContext, raise_for_failed_targets

LIGHT_TYPE = "discovery_scan"
SCRIPTED_TYPE = "scp_export"
TARGETS_TYPE = "boot_configuration"
RUNS_TABLE = "lab_runs"
MODES = ("ok", "sleep", "wait_for", "fail", "secret", "busy", "tick")


def _record_run(ctx: JobContext, server_id: str | None = None) -> None:
    ctx.audit(server_id=server_id, command_type="lab_run", endpoint=ctx.executor_id, success=True)


class LightHandler(Handler):
    """The lightest real job: one step, one side-effect row."""

    job_types = (LIGHT_TYPE,)

    def validate(self, job: Job) -> dict[str, Any]:
        return {"exactly_once": bool(job.details.get("exactly_once"))}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        with ctx.step("work", retry_safe=True):
            if params["exactly_once"]:
                ctx.store.insert(RUNS_TABLE, {"job_id": ctx.job.id, "executor_id": ctx.executor_id})
            _record_run(ctx)
            ctx.progress(100)


class ScriptedHandler(Handler):
    """Behaviour chosen by details.mode: ok | sleep | wait_for | fail | secret | busy | tick."""

    job_types = (SCRIPTED_TYPE,)

    def validate(self, job: Job) -> dict[str, Any]:
        mode = job.details.get("mode", "ok")
        if mode not in MODES:
            raise InvalidJobInput("details.mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
        seconds = job.details.get("seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) or seconds < 0:
            raise InvalidJobInput("details.seconds", f"must be a number of seconds >= 0, not {seconds!r}")
        return {
            "mode": mode,
            "seconds": float(seconds),
            "retry_safe": bool(job.details.get("retry_safe", False)),
            "message": str(job.details.get("message", "scripted failure")),
            "lines": int(job.details.get("lines", 0)),
        }

    def preflight(self, ctx: JobContext, params: dict[str, Any]) -> None:
        ctx.log("preflight ok")

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        _record_run(ctx)
        mode = params["mode"]
        for i in range(params["lines"]):
            ctx.log(f"line {i}")
        if mode == "sleep":
            with ctx.step("long wait", retry_safe=params["retry_safe"]):
                ctx.progress(10)
                ctx.sleep(params["seconds"])
        elif mode == "wait_for":
            with ctx.step("waiting for the impossible", retry_safe=params["retry_safe"]):
                ctx.wait_for(lambda: False, timeout=params["seconds"], interval=0.5, what="the impossible")
        elif mode == "tick":  # a log line every 0.2 s for `seconds` (outage tests count them)
            with ctx.step("ticking", retry_safe=True):
                for i in range(int(params["seconds"] / 0.2)):
                    ctx.log(f"tick {i}")
                    ctx.sleep(0.2)
        elif mode == "busy":  # ignores interrupts: a blocking remote call that never returns in time
            import time

            with ctx.step("blocking call", retry_safe=False):
                time.sleep(params["seconds"])
        elif mode == "fail":
            with ctx.step("doomed step", retry_safe=True):
                raise RuntimeError(params["message"])
        elif mode == "secret":
            with ctx.step("use credentials", retry_safe=True):
                for server in ctx.targets():
                    creds = ctx.credentials_for(server)
                    ctx.log(f"logging in as {creds.username} with password {creds.password}")
                    raise RuntimeError(f"login refused for {creds.username}:{creds.password}")
        ctx.progress(90)

    def cleanup(self, ctx: JobContext, params: dict[str, Any]) -> None:
        ctx.log("cleanup ran")


class TargetsHandler(Handler):
    """Per-target work: servers whose hostname starts with 'bad' fail; details.seconds waits each."""

    job_types = (TARGETS_TYPE,)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        return {"seconds": float(job.details.get("seconds", 0) or 0)}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        def one(server, task):
            task.log(f"working on {server.label}")
            _record_run(ctx, server.id)
            if params["seconds"]:
                ctx.sleep(params["seconds"])
            if (server.hostname or "").startswith("bad"):
                raise RuntimeError(f"{server.hostname} refused")
            task.progress(100)
            return server.ip_address

        with ctx.step("per-server work", retry_safe=True):
            results = ctx.run_per_target(ctx.targets(), one, max_workers=4)
        ctx.set_result(done=[r.value for r in results if r.ok])
        raise_for_failed_targets(results)


STEPS_TYPE = "idrac_network_read"


class StepsHandler(Handler):
    """Three named steps: "prepare", "probe", "apply". details.fail names the step that raises
    (its message in details.message); with details.swallow the handler catches that failure, logs
    it and goes on (the job completes, the step row stays failed)."""

    job_types = (STEPS_TYPE,)
    STEP_NAMES = ("prepare", "probe", "apply")

    def validate(self, job: Job) -> dict[str, Any]:
        fail = job.details.get("fail")
        if fail is not None and fail not in self.STEP_NAMES:
            raise InvalidJobInput("details.fail", f"must be one of {', '.join(self.STEP_NAMES)}")
        return {
            "fail": fail,
            "swallow": bool(job.details.get("swallow")),
            "message": str(job.details.get("message", "step failed")),
        }

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        _record_run(ctx)
        for name in self.STEP_NAMES:
            try:
                with ctx.step(name, retry_safe=True):
                    ctx.log(f"{name} running")
                    if name == params["fail"]:
                        raise RuntimeError(params["message"])
            except RuntimeError as exc:
                if not params["swallow"]:
                    raise
                ctx.log(f"{name} failed, going on: {exc}", "WARN")


HANDLERS = [LightHandler, ScriptedHandler, TargetsHandler, StepsHandler]
