"""The context a handler gets (the JobContext protocol of handlers/base.py)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from lib.dsm.credentials import CredentialResolver, host_of, ip_in_range
from lib.errors import AgentError
from lib.executor.errors import (
    AlreadyDone,
    Interrupted,
    InvalidJobInput,
    JobCancelled,
    JobPaused,
    LeaseLost,
    ShutdownInterrupt,
)
from lib.executor.models import Credentials, Job, Phase, Server, TargetResult, parse_ids
from lib.executor.settings import HandlerSettings, handler_settings_from_process
from lib.executor.store import HandlerStoreImpl, JobStore
from lib.executor.writer import JobWriter, log_line
from lib.logs import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

WAKE_SLICE = 0.5  # how often blocking waits re-check the interrupt flags


class IdracSlots:
    """Caps concurrent iDRAC work of this executor (activity_settings.idrac_max_concurrent)."""

    def __init__(self, limit: int = 4) -> None:
        self._cond = threading.Condition()
        self.limit = max(1, limit)
        self.in_use = 0
        self.paused = False

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self.limit = max(1, int(limit))
            self._cond.notify_all()

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if self.in_use < self.limit:
                self.in_use += 1
                return True
            self._cond.wait(timeout)
            if self.in_use < self.limit:
                self.in_use += 1
                return True
            return False

    def release(self) -> None:
        with self._cond:
            self.in_use = max(0, self.in_use - 1)
            self._cond.notify()


@dataclass
class Services:
    """What every job context shares: the backend store, credentials, the iDRAC cap, the settings
    handlers read (ctx.settings). job-executor.py passes settings read from its own Env (app.build);
    a caller that builds Services by hand without them gets the process environment's, validated."""

    store: JobStore
    handler_store: HandlerStoreImpl
    resolver: CredentialResolver
    idrac_slots: IdracSlots
    executor_id: str
    settings: HandlerSettings | None = None

    def __post_init__(self) -> None:
        if self.settings is None:
            self.settings = handler_settings_from_process()


class TaskHandleImpl:
    """The job_tasks row of one server of a job."""

    def __init__(self, ctx: JobContextImpl, server: Server) -> None:
        self.server = server
        self._ctx = ctx
        self._w = ctx.writer

    @property
    def task_id(self) -> str | None:
        return self._w.task_id(self.server.id)

    def start(self) -> None:
        self._w.task_update(self.server.id, status="running", progress=0, line=log_line("started"))

    def log(self, msg: str, level: str = "INFO") -> None:
        self._w.task_update(self.server.id, line=log_line(msg, level))
        self._ctx.log(f"{self.server.label}: {msg}", level)

    def progress(self, percent: int) -> None:
        self._w.task_update(self.server.id, progress=_clamp(percent))

    def complete(self, msg: str | None = None) -> None:
        self._w.task_update(
            self.server.id, status="completed", progress=100, line=log_line(msg or "completed")
        )

    def fail(self, error: str) -> None:
        self._w.task_update(self.server.id, status="failed", line=log_line(redact(error), "ERROR"))

    def cancel(self) -> None:
        paused = self._ctx.interrupt_reason is JobPaused  # a paused job's tasks are paused too
        word = "paused" if paused else "cancelled"
        self._w.task_update(self.server.id, status=word, line=log_line(word, "WARN"))


def _clamp(percent: float) -> int:
    try:
        return max(0, min(100, int(percent)))
    except (TypeError, ValueError):
        return 0


class JobContextImpl:
    """One per running job; thread-safe (handlers may work on many servers at once)."""

    def __init__(self, job: Job, writer: JobWriter, services: Services) -> None:
        self.job = job
        self.writer = writer
        self.services = services
        self.store = services.handler_store
        self.executor_id = services.executor_id
        self.settings: HandlerSettings = services.settings  # type: ignore[assignment]
        self._interrupt = threading.Event()
        self._reason: type[Interrupted] | None = None
        self.graceful_cancel_requested = False
        self._steps = threading.local()
        self.current_step = "claimed"
        self.current_retry_safe = True
        self._step_count = 0  # workflow_executions.step_number of the last step entered
        self.phase = Phase.VALIDATE
        self._result: dict[str, Any] = {}
        self._targets: list[Server] | None = None
        self._tasks: dict[str, TaskHandleImpl] = {}
        self._lock = threading.Lock()

    # -- interruption --------------------------------------------------------------------------
    def interrupt(self, reason: type[Interrupted]) -> None:
        """Called by the daemon (cancel seen, shutdown past drain, lease lost). First reason wins,
        except that a lost lease overrides: then nothing may be written at all."""
        with self._lock:
            if self._reason is None or reason is LeaseLost:
                self._reason = reason
        self._interrupt.set()

    @property
    def interrupt_reason(self) -> type[Interrupted] | None:
        return self._reason

    @property
    def cancelled(self) -> bool:
        return self._interrupt.is_set()

    def check(self) -> None:
        if self._interrupt.is_set():
            reason = self._reason or JobCancelled
            raise reason(f"job {self.job.id} interrupted ({reason.__name__}) during step {self.current_step}")

    def sleep(self, seconds: float) -> None:
        self.check()
        if self._interrupt.wait(max(0.0, seconds)):
            self.check()

    def wait_for(
        self, predicate: Callable[[], T], timeout: float, interval: float = 2.0, *, what: str = "condition"
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            self.sleep(min(interval, left))

    # -- steps, logs, progress -----------------------------------------------------------------
    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.writer.patch(phase=phase.value)

    @contextlib.contextmanager
    def step(self, name: str, *, retry_safe: bool) -> Iterator[None]:
        self.check()
        stack = getattr(self._steps, "stack", None)
        if stack is None:
            stack = self._steps.stack = []
        stack.append((name, retry_safe))
        self._enter_step(name, retry_safe)
        row = self._step_started(name, retry_safe)
        try:
            yield
        except BaseException as exc:
            if getattr(exc, "_dsm_step", None) is None:
                with contextlib.suppress(AttributeError, TypeError):
                    exc._dsm_step = name  # type: ignore[attr-defined]
                    exc._dsm_retry_safe = retry_safe  # type: ignore[attr-defined]
            self._step_ended(row, exc)
            raise
        else:
            self._step_ended(row, None)
        finally:
            stack.pop()
            if stack:
                self._enter_step(*stack[-1], announce=False)

    def _enter_step(self, name: str, retry_safe: bool, *, announce: bool = True) -> None:
        self.current_step = name
        self.current_retry_safe = retry_safe
        self.writer.patch(current_step=name, step_retry_safe=retry_safe)
        if announce:
            self.writer.line(f"step: {name}")

    def _step_started(self, name: str, retry_safe: bool) -> dict[str, Any]:
        """The workflow_executions row of a step entered now (status running), buffered."""
        with self._lock:  # number and start time together: step numbers follow start times
            self._step_count += 1
            number = self._step_count
            started = _now_iso()
        server: Server | None = getattr(self._steps, "server", None)  # set inside run_per_target
        row: dict[str, Any] = {
            "id": str(uuid.uuid4()),  # made here: a re-sent write is recognised
            "workflow_type": self.job.job_type,
            "step_number": number,
            "step_name": redact(str(name))[:500],
            "step_status": "running",
            "step_started_at": started,
            "step_details": {
                "phase": self.phase.value,
                "retry_safe": retry_safe,
                "executor_id": self.executor_id,
            },
            "server_id": server.id if server else None,
            "host_id": server.vcenter_host_id if server else None,
        }
        self.writer.step_row(row)
        return row

    def skipped_step(self, name: str, reason: str) -> None:
        """A step the runner did not run (execute when preflight found the work already done)."""
        row = self._step_started(name, retry_safe=True)
        details = {**row["step_details"], "reason": redact(str(reason))[:1000]}
        self.writer.step_row(
            {
                **row,
                "step_status": "skipped",
                "step_completed_at": row["step_started_at"],
                "step_details": details,
            }
        )

    def _step_ended(self, row: dict[str, Any], exc: BaseException | None) -> None:
        """Close a step's row: completed, or failed with the (redacted) error. An interrupted step
        (cancel, pause, shutdown) is failed too, with the reason: it started and did not finish.
        A lost lease writes nothing (the writer drops everything once the job is not ours)."""
        # The whole row again: should the start write never have landed, the end still inserts it.
        end: dict[str, Any] = {**row, "step_status": "completed", "step_completed_at": _now_iso()}
        if exc is not None and not isinstance(exc, AlreadyDone):
            end["step_status"] = "failed"
            end["step_error"] = _step_error(exc)
            if isinstance(exc, Interrupted):
                word = _INTERRUPT_WORD.get(type(exc), "interrupted")
                end["step_details"] = {**row["step_details"], "interrupted": word}
        self.writer.step_row(end)

    def log(self, msg: str, level: str = "INFO") -> None:
        self.writer.line(msg, level)
        log.log(_level(level), "job %s: %s", self.job.id, redact(str(msg)))

    def progress(self, percent: float) -> None:
        self.writer.patch(progress_percent=_clamp(percent))

    def set_result(self, **values: Any) -> None:
        with self._lock:
            self._result.update(values)

    @property
    def result(self) -> dict[str, Any]:
        return dict(self._result)

    # -- targets and tasks ---------------------------------------------------------------------
    def targets(self) -> list[Server]:
        if self._targets is None:
            self._targets = resolve_targets(self.job, self.services.store, self.log)
        return list(self._targets)

    def task(self, server: Server) -> TaskHandleImpl:
        with self._lock:
            handle = self._tasks.get(server.id)
            if handle is None:
                handle = self._tasks[server.id] = TaskHandleImpl(self, server)
            return handle

    def run_per_target(
        self,
        targets: Iterable[Server],
        fn: Callable[[Server, Any], Any],
        max_workers: int = 8,
        *,
        idrac: bool = True,
    ) -> list[TargetResult]:
        targets = list(targets)
        if not targets:
            return []
        interrupted: list[BaseException] = []

        def one(server: Server) -> TargetResult:
            task = self.task(server)
            self._steps.server = server  # step rows opened by fn name this server
            if self._interrupt.is_set():
                task.cancel()
                return TargetResult(server, False, error="not started: job interrupted")
            try:
                with self.server_lock(server), self.idrac_slot() if idrac else contextlib.nullcontext():
                    task.start()
                    value = fn(server, task)
            except Interrupted as exc:
                task.cancel()
                interrupted.append(exc)
                return TargetResult(server, False, error="interrupted")
            except Exception as exc:
                msg = redact(str(exc)) or type(exc).__name__
                task.fail(msg)
                self.log(f"{server.label}: failed: {msg}", "ERROR")
                return TargetResult(server, False, error=msg)
            task.complete()
            return TargetResult(server, True, value)

        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets)))) as pool:
            results = list(pool.map(one, targets))
        if interrupted:
            raise interrupted[0]
        return results

    @contextlib.contextmanager
    def server_lock(self, server: Server) -> Iterator[None]:
        """One job at a time per server, across executors (executor_server_locks)."""
        store, claim = self.services.store, self.writer.claim
        announced = False
        while True:
            self.check()
            try:
                if store.acquire_server_lock(claim, server.id):
                    break
                if not announced:
                    self.log(f"{server.label}: waiting, another job is working on this server", "WARN")
                    announced = True
            except AgentError as exc:
                log.warning("job %s: server lock for %s: %s", self.job.id, server.label, exc)
            self.sleep(1.0)
        try:
            yield
        finally:
            with contextlib.suppress(AgentError):
                store.release_server_lock(claim, server.id)

    @contextlib.contextmanager
    def idrac_slot(self) -> Iterator[None]:
        slots = self.services.idrac_slots
        while not slots.acquire(WAKE_SLICE):
            self.check()
        try:
            yield
        finally:
            slots.release()

    # -- credentials and audit -----------------------------------------------------------------
    def credentials_for(self, server: Server) -> Credentials:
        return self.services.resolver.for_server(server)

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
        self.writer.audit(
            {
                "id": str(uuid.uuid4()),  # made here: a re-sent batch is recognised (ignore-duplicates)
                "server_id": server_id,
                "job_id": self.job.id,
                "task_id": self.writer.task_id(server_id) if server_id else None,
                "command_type": command_type[:100],
                "endpoint": redact(endpoint)[:500],
                "full_url": redact(full_url.split("?", 1)[0])[:1000] if full_url else None,
                "status_code": status_code,
                "response_time_ms": response_time_ms,
                "success": success,
                "error_message": redact(error_message)[:1000] if error_message else None,
                "operation_type": operation_type,
                "source": "job_executor",
            }
        )


_INTERRUPT_WORD: dict[type, str] = {
    JobCancelled: "cancelled",
    JobPaused: "paused",
    ShutdownInterrupt: "executor shut down",
    LeaseLost: "lease lost",
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _step_error(exc: BaseException) -> str:
    """The step_error text: redacted and bounded, like the job's details.error."""
    if isinstance(exc, Interrupted):
        word = _INTERRUPT_WORD.get(type(exc), "interrupted")
        return f"{word} during this step"
    if isinstance(exc, InvalidJobInput):
        text = redact(str(exc.message))
    else:
        text = redact(str(exc)) or type(exc).__name__
        if not isinstance(exc, AgentError | TimeoutError):
            text = f"{type(exc).__name__}: {text}"
    return text[:2000]


def _level(level: str) -> int:
    return {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40}.get(level.upper(), 20)


def _addresses(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [str(value.get("ip") or value.get("ip_address") or "")]
    return parse_ids(value)


def resolve_targets(job: Job, store: JobStore, log_fn: Callable[[str, str], None]) -> list[Server]:
    """Servers of a job's target_scope, in every shape of CONTRACT.md section 4.

    Shapes: {"type":"specific","server_ids":[...]}, {"server_ids":[...]}, {"vcenter_host_ids":[...]},
    {"cluster_id"|"cluster_name": ...}, {"vcenter_ids":[...]}, {"ip_range": "cidr" | "a-b"},
    {"ip_list": [...]}, {"type":"all"}. With an empty scope, details.server_id(s) are used.
    """
    scope: Mapping[str, Any] = job.target_scope or {}
    details = job.details or {}
    server_ids = parse_ids(scope.get("server_ids")) + parse_ids(scope.get("server_id"))
    if not scope and (details.get("server_ids") or details.get("server_id")):
        server_ids = parse_ids(details.get("server_ids")) + parse_ids(details.get("server_id"))
    found: dict[str, Server] = {}
    wanted: list[str] = []

    if server_ids:
        wanted += server_ids
    host_ids = parse_ids(scope.get("vcenter_host_ids"))
    vcenter_ids = parse_ids(scope.get("vcenter_ids"))
    cluster = scope.get("cluster_name")
    if scope.get("cluster_id") and not cluster:
        cluster = store.cluster_name(str(scope["cluster_id"]))
        if cluster is None:
            raise InvalidJobInput(
                "target_scope.cluster_id", f"no vCenter cluster with id {scope['cluster_id']}"
            )
    if host_ids or vcenter_ids or cluster:
        ids, unlinked = store.server_ids_for_vcenter_hosts(
            host_ids=host_ids, vcenter_ids=vcenter_ids, cluster=str(cluster) if cluster else None
        )
        wanted += ids
        if unlinked:
            log_fn(
                f"{len(unlinked)} vCenter hosts have no linked server and are skipped: "
                + ", ".join(unlinked[:20]),
                "WARN",
            )
    for s in store.servers_by_ids(list(dict.fromkeys(wanted))) if wanted else []:
        found[s.id] = s
    missing = [i for i in dict.fromkeys(wanted) if i not in found]
    if missing:
        log_fn(
            f"{len(missing)} target servers do not exist and are skipped: {', '.join(missing[:20])}", "WARN"
        )

    ip_range = scope.get("ip_range")
    ip_list = _addresses(scope.get("ip_list")) if scope.get("ip_list") is not None else []
    if ip_range or ip_list or scope.get("type") == "all":
        if ip_range and not _valid_range(str(ip_range)):
            raise InvalidJobInput(
                "target_scope.ip_range", f"{ip_range!r} is not a CIDR, an a-b range or an IP"
            )
        wanted_ips = {host_of(a) for a in ip_list if a}
        for s in store.all_servers():
            host = host_of(s.ip_address)
            if (
                scope.get("type") == "all"
                or (ip_range and ip_in_range(s.ip_address, str(ip_range)))
                or host in wanted_ips
            ):
                found.setdefault(s.id, s)
        unknown = wanted_ips - {host_of(s.ip_address) for s in found.values()}
        if unknown:
            log_fn(
                f"{len(unknown)} addresses of ip_list are not known servers: "
                + ", ".join(sorted(unknown)[:20]),
                "WARN",
            )

    if not found:
        raise InvalidJobInput("target_scope", f"selects no server ({dict(scope) or 'empty'})")
    return list(found.values())


def _valid_range(r: str) -> bool:
    try:
        if "/" in r:
            ipaddress.ip_network(r.strip(), strict=False)
        elif "-" in r:
            for p in r.split("-", 1):
                ipaddress.ip_address(p.strip())
        else:
            ipaddress.ip_address(r.strip())
        return True
    except ValueError:
        return False


__all__ = [
    "IdracSlots",
    "JobCancelled",
    "JobContextImpl",
    "LeaseLost",
    "Services",
    "ShutdownInterrupt",
    "TargetResult",
    "TaskHandleImpl",
    "resolve_targets",
]
