"""The phase runner: one claimed job row in, its handler's phases run, its end recorded.

The runner, not the handler, writes the job's bookkeeping (status, phase, step, progress, logs,
error, failed step) through the job's JobWriter, guarded by the claim token. One broad `except`
lives here, at the boundary: a handler's bug fails its job, never the executor.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import handlers as registry
from lib.errors import AgentError
from lib.executor.context import JobContextImpl, Services
from lib.executor.errors import (
    AlreadyDone,
    Interrupted,
    InvalidJobInput,
    JobCancelled,
    JobPaused,
    LeaseLost,
    ShutdownInterrupt,
)
from lib.executor.models import BadRow, Job, Phase
from lib.executor.store import Claim
from lib.executor.writer import JobWriter
from lib.logs import redact

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str  # completed | failed | cancelled | paused | lost
    error: str | None = None
    step: str | None = None


class JobRun:
    """One claimed job: build its context, run its phases, record the end."""

    def __init__(
        self,
        row: Mapping[str, Any],
        services: Services,
        *,
        give_up: threading.Event | None = None,
        on_context: Callable[[JobRun], None] | None = None,
    ) -> None:
        self.row = row
        self.services = services
        self.give_up = give_up
        self.job_id = str(row.get("id"))
        self.claim = Claim(self.job_id, str(row.get("claim_token")))
        self.writer = JobWriter(
            services.store,
            self.claim,
            on_cancelled=lambda status: self.interrupt(JobPaused if status == "paused" else JobCancelled),
            on_lost=lambda: self.interrupt(LeaseLost),
        )
        self.ctx: JobContextImpl | None = None
        self._pending_interrupt: type[Interrupted] | None = None
        self._on_context = on_context
        self.outcome: Outcome | None = None

    def interrupt(self, reason: type[Interrupted]) -> None:
        if self.ctx is not None:
            self.ctx.interrupt(reason)
        elif self._pending_interrupt is None or reason is LeaseLost:
            self._pending_interrupt = reason

    @property
    def current_step(self) -> str:
        return self.ctx.current_step if self.ctx else "claimed"

    def run(self) -> Outcome:
        try:
            self.outcome = self._run()
        except Exception as exc:  # the last line of defence: record it, never crash the daemon
            log.exception("job %s: runner error", self.job_id)
            self.outcome = Outcome(
                "failed", f"internal executor error: {redact(str(exc))}", self.current_step
            )
            self.writer.finish(
                "failed",
                {"error": self.outcome.error, "failed_step": self.outcome.step},
                give_up=self.give_up,
            )
        return self.outcome

    def _run(self) -> Outcome:
        try:
            job = Job.from_row(self.row)
        except BadRow as exc:
            return self._finish_failed(f"bad job row: {exc}", "claimed", Phase.VALIDATE, retry_safe=True)
        ctx = JobContextImpl(job, self.writer, self.services)
        self.ctx = ctx
        if self._pending_interrupt is not None:
            ctx.interrupt(self._pending_interrupt)
        if self._on_context:
            self._on_context(self)
        log.info("job %s (%s): started", job.id, job.job_type)
        try:
            handler = registry.get(job.job_type)
        except AgentError as exc:
            return self._finish_failed(str(exc), "claimed", Phase.VALIDATE, retry_safe=True)

        params: Any = None
        error: BaseException | None = None
        already: str | None = None
        try:
            ctx.set_phase(Phase.PREFLIGHT)  # input validation is part of preflight (issue 7)
            with ctx.step("validate input", retry_safe=True):
                params = handler.validate(job)
            with ctx.step("preflight", retry_safe=True):
                try:
                    handler.preflight(ctx, params)
                except AlreadyDone as done:
                    already = done.message
                    ctx.log(f"already done, nothing to change: {done.message}")
            if already is None:
                ctx.set_phase(Phase.EXECUTE)
                with ctx.step("execute", retry_safe=False):
                    handler.execute(ctx, params)
            else:
                ctx.skipped_step("execute", f"already done: {already}")
            ctx.set_phase(Phase.POSTCHECK)
            with ctx.step("postcheck", retry_safe=True):
                handler.postcheck(ctx, params)
        except BaseException as exc:
            error = exc
        failed_phase = ctx.phase
        failed_step = getattr(error, "_dsm_step", None) or ctx.current_step
        retry_safe = getattr(error, "_dsm_retry_safe", ctx.current_retry_safe)
        self._cleanup(handler, ctx, params)
        if ctx.interrupt_reason is not None and not isinstance(error, Interrupted):
            # The handler finished (or failed) on its own after the interrupt arrived: the interrupt wins.
            error = ctx.interrupt_reason(f"interrupted during step {failed_step}")
        return self._record(ctx, error, failed_phase, failed_step, retry_safe, already)

    def _cleanup(self, handler: Any, ctx: JobContextImpl, params: Any) -> None:
        phase, step = ctx.phase, ctx.current_step
        try:
            ctx.phase = Phase.CLEANUP
            handler.cleanup(ctx, params)
        except Exception as exc:
            ctx.log(f"cleanup failed: {redact(str(exc))}", "WARN")
        finally:
            ctx.phase, ctx.current_step = phase, step

    def _record(
        self,
        ctx: JobContextImpl,
        error: BaseException | None,
        phase: Phase,
        step: str,
        retry_safe: bool,
        already: str | None,
    ) -> Outcome:
        eid = self.services.executor_id
        if error is None:
            ctx.log("job completed" + (f" (already done: {already})" if already else ""))
            patch: dict[str, Any] = {"progress_percent": 100, "current_step": "completed", "phase": "done"}
            if ctx.result:
                patch["result"] = ctx.result
            if already:
                patch["already_done"] = already
            self.writer.finish("completed", patch, give_up=self.give_up)
            return Outcome("completed")
        if isinstance(error, LeaseLost):
            log.warning(
                "job %s: not ours any more (cancelled elsewhere, taken over or failed as stale)", ctx.job.id
            )
            return Outcome("lost", step=step)
        if isinstance(error, JobPaused):
            ctx.log(
                f"paused during step {step}; cleanup done; claim released "
                "(set the job back to pending to run it again from the start)",
                "WARN",
            )
            self.writer.allow_cancelled = True
            self.writer.finish(
                "paused",
                {"paused_step": step, "current_step": step, "phase": phase.value},
                give_up=self.give_up,
            )
            return Outcome("paused", step=step)
        if isinstance(error, JobCancelled):
            ctx.log(f"cancelled during step {step}; cleanup done", "WARN")
            self.writer.allow_cancelled = True
            self.writer.finish(
                "cancelled",
                {"cancelled_step": step, "current_step": step, "phase": phase.value},
                give_up=self.give_up,
            )
            return Outcome("cancelled", step=step)
        if isinstance(error, ShutdownInterrupt):
            safety = (
                "safe to retry" if retry_safe else "NOT safe to retry blindly: check the target's state first"
            )
            return self._finish_failed(
                f"executor {eid} shut down during step {step} ({safety})", step, phase, retry_safe
            )
        if isinstance(error, InvalidJobInput):
            return self._finish_failed(
                error.message, step, Phase.PREFLIGHT, retry_safe=True, field=error.field
            )
        message = redact(str(error)) or type(error).__name__
        if not isinstance(error, AgentError | TimeoutError):
            message = f"{type(error).__name__}: {message}"
            tb = redact("".join(traceback.format_exception(error))[-3000:])
            log.error("job %s: handler error in step %s:\n%s", ctx.job.id, step, tb)
        hint = getattr(error, "hint", None)
        return self._finish_failed(message, step, phase, retry_safe, hint=hint)

    def _finish_failed(
        self,
        message: str,
        step: str,
        phase: Phase,
        retry_safe: bool,
        *,
        field: str | None = None,
        hint: str | None = None,
    ) -> Outcome:
        patch: dict[str, Any] = {
            "error": message,
            "failed_step": step,
            "phase": phase.value,
            "retry_safe": retry_safe,
            "current_step": step,
        }
        if field:
            patch["invalid_field"] = field
        if hint:
            patch["hint"] = redact(hint)
        if self.ctx is not None and self.ctx.result:
            patch["result"] = self.ctx.result  # partial results of a failed job are kept too
        self.writer.line(f"failed in step {step}: {message}", "ERROR")
        self.writer.finish("failed", patch, give_up=self.give_up)
        log.warning("job %s: failed in step %s: %s", self.job_id, step, message)
        return Outcome("failed", message, step)
