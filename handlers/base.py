"""The handler contract: what a job handler implements, and the context the runner hands it.

A handler describes the work; the runner (lib/executor/runner.py) owns the bookkeeping. A handler
never writes `jobs` itself: status, started_at/completed_at, details.current_step,
details.progress_percent, details.console_log, details.error/failed_step/phase and the job_tasks
rows are written by the runner, guarded by the claim token, so a cancelled or taken-over job is
never overwritten.

Life of a job (the runner calls these in order)::

    params = handler.validate(job)          # pure; raise InvalidJobInput(field, problem)
    handler.preflight(ctx, params)          # connectivity, auth, constraints, idempotency check;
                                            #   raise AlreadyDone("...") when the work is done already
    handler.execute(ctx, params)            # the work, in named steps (skipped after AlreadyDone)
    handler.postcheck(ctx, params)          # verification
    handler.cleanup(ctx, params)            # ALWAYS runs last (success, failure, cancel, shutdown),
                                            #   with ctx.cancelled possibly True; must not raise

Outcome:
- returns normally -> job `completed` (details.result = whatever was given to ctx.set_result);
- InvalidJobInput -> `failed` in phase "preflight", details.error names the field;
- any other exception -> `failed`, details.error = the message (secrets redacted),
  details.failed_step = the step it happened in, details.phase = the phase;
- cancelled by the UI -> stays `cancelled`; details.cancelled_step records where it stopped;
- paused by the UI -> stopped like a cancel (cleanup runs), stays `paused`, the claim is released;
  details.paused_step records where it stopped; set back to `pending` it runs again from the start
  (preflight's idempotency check skips what is already done);
- executor shut down past its drain time -> `failed`, "executor shut down during step X" and
  details.retry_safe = the retry_safe flag of that step.
If per-target work failed for some targets (ctx.run_per_target results), raise an error naming them
(see `raise_for_failed_targets`); the job fails, the other targets' task rows stay completed.

Waiting: never `time.sleep` in a handler. `ctx.sleep(s)` and `ctx.wait_for(pred, timeout, interval)`
wake within a second when the job is cancelled or the executor shuts down, and raise `Interrupted`
(`JobCancelled` / `JobPaused` / `ShutdownInterrupt` / `LeaseLost`). Let it propagate: the runner records it.
Call `ctx.check()` between remote calls of a long loop for the same effect without waiting.

Example::

    from handlers.base import Handler, InvalidJobInput, AlreadyDone, raise_for_failed_targets

    class PowerActionHandler(Handler):
        job_types = ("power_action",)
        uses_idrac = True

        def validate(self, job):
            action = job.details.get("action")
            if action not in ("On", "ForceOff", "GracefulShutdown"):
                raise InvalidJobInput("details.action", f"unsupported value {action!r}")
            return {"action": action}

        def execute(self, ctx, params):
            def one(server, task):
                creds = ctx.credentials_for(server)
                with ctx.step(f"reset {server.label}", retry_safe=False):
                    ...                                  # Redfish call via lib/redfish.py
                task.log("reset sent")
                ctx.wait_for(lambda: is_on(server), timeout=300, interval=5)
                ctx.store.update_server(server.id, power_state="On")
                return "On"

            results = ctx.run_per_target(ctx.targets(), one, max_workers=8)
            raise_for_failed_targets(results)

Registering: add the job types to the table in handlers/__init__.py. Tests and benches may add
handlers at run time with `handlers.register(...)` or EXECUTOR_EXTRA_HANDLERS=module:attr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, TypeVar

from lib.errors import AgentError
from lib.executor.errors import (
    AlreadyDone,
    Interrupted,
    InvalidJobInput,
    JobCancelled,
    JobPaused,
    LeaseLost,
    ShutdownInterrupt,
    UnknownJobType,
)
from lib.executor.models import Credentials, Job, JobStatus, Phase, Priority, Server, TargetResult
from lib.executor.settings import HandlerSettings

__all__ = [
    "AlreadyDone",
    "Credentials",
    "Handler",
    "HandlerSettings",
    "HandlerStore",
    "Interrupted",
    "InvalidJobInput",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobPaused",
    "JobStatus",
    "LeaseLost",
    "Phase",
    "Priority",
    "Server",
    "ShutdownInterrupt",
    "TargetResult",
    "TargetsFailed",
    "TaskHandle",
    "UnknownJobType",
    "raise_for_failed_targets",
]

T = TypeVar("T")


class TargetsFailed(AgentError):
    """Some targets of a job failed; the message lists each one and why."""

    default_hint = "See the per-server task logs of this job for each failure."

    def __init__(self, failed: list[TargetResult], total: int) -> None:
        names = "; ".join(f"{r.target.label}: {r.error}" for r in failed)
        super().__init__(f"{len(failed)} of {total} targets failed: {names}")
        self.failed = failed


def raise_for_failed_targets(results: Iterable[TargetResult]) -> None:
    """Raise TargetsFailed when any target failed (the job then fails and lists them)."""
    results = list(results)
    failed = [r for r in results if not r.ok]
    if failed:
        raise TargetsFailed(failed, len(results))


class TaskHandle(Protocol):
    """The job_tasks row of one target. Writes are buffered and guarded like the job's."""

    server: Server
    task_id: str | None

    def start(self) -> None: ...  # status running, started_at
    def log(self, msg: str, level: str = "INFO") -> None: ...  # appends to job_tasks.log (and job log)
    def progress(self, percent: int) -> None: ...
    def complete(self, msg: str | None = None) -> None: ...
    def fail(self, error: str) -> None: ...
    def cancel(self) -> None: ...


class HandlerStore(Protocol):
    """Named backend operations a handler may need (service-role PostgREST, never jobs rows)."""

    def get_server(self, server_id: str) -> Server | None: ...
    def update_server(self, server_id: str, **fields: Any) -> None: ...
    def update_vcenter_host(self, host_id: str, **fields: Any) -> None: ...
    def activity_settings(self) -> Mapping[str, Any]: ...
    def select(
        self, table: str, params: Mapping[str, str], *, columns: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows of servers, vcenter_hosts, vcenter_clusters or vcenters: only the non-secret columns
        of lib.executor.store.HANDLER_READABLE (ValueError otherwise). Filters: PostgREST params."""
        ...

    def insert(self, table: str, rows: Mapping[str, Any] | list[Mapping[str, Any]]) -> list[dict]:
        """Insert rows; refused (ValueError) for the tables in lib.executor.store.HANDLER_UNWRITABLE."""
        ...

    # The sync jobs' settings and sinks: passwords are read and decrypted inside the store, never
    # through select().
    def openmanage_connection(self) -> Any: ...
    def vcenter_connections(self, ids: Sequence[str] | None) -> list[Any]: ...
    def ome_table_sink(self) -> Any: ...
    def vcenter_table_sink(self, vcenter_id: str) -> Any: ...
    def record_vcenter_sync(self, vcenter_id: str, status: str, error: str | None) -> None: ...


class JobContext(Protocol):
    """What a handler gets. Implemented by lib/executor/context.py (JobContextImpl)."""

    job: Job  # frozen, from Job.from_row
    store: HandlerStore
    executor_id: str
    # IDRAC_* and POWER_* settings, read once by the executor from its Env (--env-file included).
    # Handlers read settings only from here, never from the environment.
    settings: HandlerSettings

    # True when details.graceful_cancel was set on the running job (rolling updates: finish the
    # current host, then stop by returning or raising). Not an interrupt: nothing wakes for it.
    graceful_cancel_requested: bool

    @property
    def cancelled(self) -> bool: ...  # True once the UI cancelled or the executor is shutting down

    def step(self, name: str, *, retry_safe: bool) -> AbstractContextManager[None]:
        """Enter a named step: details.current_step = name (also logged). retry_safe says whether
        re-running this step after an interruption is harmless (a read, an idempotent write)."""
        ...

    def log(self, msg: str, level: str = "INFO") -> None: ...  # details.console_log (redacted, bounded)
    def progress(self, percent: float) -> None: ...  # details.progress_percent, 0..100
    def check(self) -> None: ...  # raise Interrupted if cancelled / shutting down / lease lost
    def sleep(self, seconds: float) -> None: ...  # wakes and raises Interrupted on cancel/shutdown
    def wait_for(
        self, predicate: Callable[[], T], timeout: float, interval: float = 2.0, *, what: str = "condition"
    ) -> T:
        """Call predicate every `interval` s until it returns a truthy value (returned). Raises
        TimeoutError naming `what` after `timeout` s, Interrupted on cancel/shutdown."""
        ...

    def targets(self) -> list[Server]:
        """The servers of target_scope, in every shape of CONTRACT.md section 4. Unknown ids are
        logged and skipped; an empty result raises InvalidJobInput('target_scope', ...)."""
        ...

    def task(self, server: Server) -> TaskHandle: ...  # the job_tasks row for a server (created if absent)
    def run_per_target(
        self,
        targets: Iterable[Server],
        fn: Callable[[Server, TaskHandle], Any],
        max_workers: int = 8,
        *,
        idrac: bool = True,
    ) -> list[TargetResult]:
        """Run fn(server, task) per target in a bounded pool. Per target: takes the server lock (one
        job at a time per server, across executors), an iDRAC slot when idrac=True
        (activity_settings.idrac_max_concurrent), marks its task running -> completed/failed. An
        exception in one target does not stop the others; Interrupted stops the remaining ones."""
        ...

    def server_lock(self, server: Server) -> AbstractContextManager[None]: ...
    def idrac_slot(self) -> AbstractContextManager[None]: ...
    def credentials_for(self, server: Server) -> Credentials:
        """iDRAC credentials per CONTRACT.md section 5; raises AuthError/ConfigError with a clear
        message when none match or decryption fails. Never log the password."""
        ...

    def audit(
        self,
        *,
        server_id: str | None,
        command_type: str,
        endpoint: str,
        full_url: str | None = None,
        status_code: int | None = None,
        response_time_ms: int | None = None,
        success: bool = True,
        error_message: str | None = None,
        operation_type: str = "idrac_api",
    ) -> None:
        """Record an idrac_commands row (buffered, best effort, redacted; no bodies)."""
        ...

    def set_result(self, **values: Any) -> None: ...  # merged into details.result at the end


class Handler:
    """Base class: override validate and execute; the other phases default to doing nothing.

    Class attributes:
      job_types   the job_type values this handler serves (registered in handlers/__init__.py)
      uses_idrac  True when the work talks to iDRACs (run_per_target then takes iDRAC slots)
    One instance serves many jobs concurrently: keep per-job state in locals or in params, not on self.
    """

    job_types: ClassVar[tuple[str, ...]] = ()
    uses_idrac: ClassVar[bool] = False

    def validate(self, job: Job) -> Any:
        """Check the job's input and return the parameters the other phases use.
        Pure: no I/O and no settings (defaults from ctx.settings are applied in preflight/execute).
        Raise InvalidJobInput(field, problem) naming the field."""
        return dict(job.details)

    def preflight(self, ctx: JobContext, params: Any) -> None:
        """Connectivity, authentication, constraints, and the idempotency check (raise AlreadyDone)."""

    def execute(self, ctx: JobContext, params: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def postcheck(self, ctx: JobContext, params: Any) -> None:
        """Verify the result (read back what was changed)."""

    def cleanup(self, ctx: JobContext, params: Any) -> None:
        """Release what preflight/execute acquired (sessions, mounts). Always runs; must not raise."""
