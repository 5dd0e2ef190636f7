"""Buffered, token-guarded writes of one job: details keys, console lines, task rows, audit rows.

Handlers and the runner only append to the buffer (never blocking on the network); the keeper
thread flushes every few hundred milliseconds and the runner flushes at the end. When the backend
is unreachable the buffer keeps everything (bounded) and the next flush sends it: no log line is
lost to a hiccup. When a guarded write is refused, the writer asks the backend why: a job the UI
cancelled (or paused) is still ours to annotate (cleanup log, the step it stopped in); a job that is
not ours any more (taken over, failed as stale) is never written again.

Exactly once: a batch taken from the buffer gets a sequence number and stays "in flight" until the
backend confirms it; after an ambiguous failure (a timeout after the commit) the SAME batch is
re-sent with the same number and the SQL skips it when already applied. New lines wait for the next
batch. Audit rows carry a client-made id and are inserted with ignore-duplicates. Step rows
(workflow_executions) carry a client-made id too and are sent in order until confirmed; the SQL
applies a re-sent one as a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lib.errors import AgentError, AuthError
from lib.executor.store import Claim, JobStore
from lib.logs import redact

STEP_REJECTED_STATUSES = (400, 404, 409)  # the backend refuses these rows for good

log = logging.getLogger(__name__)

MAX_BUFFERED_LINES = 5000
MAX_LINE_CHARS = 2000
MAX_AUDIT_BUFFER = 2000
MAX_STEP_BUFFER = 2000  # step-row writes kept through an outage
TASK_LOG_CHARS = 8000  # per flush; the SQL bounds the whole task log


def log_line(message: str, level: str = "INFO", *, now: datetime | None = None) -> str:
    """The UI's console line: "[HH:MM:SS] [LEVEL] message", UTC, redacted and bounded."""
    ts = (now or datetime.now(UTC)).strftime("%H:%M:%S")
    text = redact(str(message)).replace("\r", "")
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + " ...[truncated]"
    return f"[{ts}] [{level.upper()}] {text}"


@dataclass
class _TaskPending:
    server_id: str | None
    task_id: str | None = None
    status: str | None = None
    progress: int | None = None
    log: list[str] = field(default_factory=list)
    dirty: bool = False
    seq: int = 0
    inflight: tuple[int, str | None, int | None, str | None] | None = None  # (seq, status, progress, log)


class JobWriter:
    """The write buffer of one claimed job."""

    def __init__(
        self,
        store: JobStore,
        claim: Claim,
        *,
        on_cancelled: Callable[[str], None] | None = None,  # called with "cancelled" or "paused"
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.claim = claim
        self._on_cancelled = on_cancelled
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._lines: list[str] = []
        self._dropped = 0
        self._patch: dict[str, Any] = {}
        self._tasks: dict[str | None, _TaskPending] = {}
        self._audit: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []  # step-row writes, oldest first, until confirmed
        self._step_base: int | None = None  # step numbers of earlier runs of this job (re-queued)
        self._seq = 0  # sequence number of the last batch taken under this claim
        self._inflight: tuple[int, dict[str, Any], list[str]] | None = None  # sent, not confirmed
        self._final: tuple[int, dict[str, Any], list[str]] | None = None  # the finishing batch
        self.allow_cancelled = False  # set once we know the UI cancelled the job (still ours)
        self.lost = False  # the job is not ours any more: write nothing
        self.last_error: str | None = None
        self.finished_status: str | None = None

    # -- buffering (never blocks on the network) ---------------------------------------------
    def line(self, message: str, level: str = "INFO") -> None:
        with self._lock:
            self._lines.append(log_line(message, level))
            if len(self._lines) > MAX_BUFFERED_LINES:
                drop = len(self._lines) - MAX_BUFFERED_LINES
                del self._lines[:drop]
                self._dropped += drop

    def patch(self, **values: Any) -> None:
        with self._lock:
            self._patch.update(values)

    def task(self, server_id: str | None) -> _TaskPending:
        with self._lock:
            t = self._tasks.get(server_id)
            if t is None:
                t = self._tasks[server_id] = _TaskPending(server_id)
            return t

    def task_update(
        self,
        server_id: str | None,
        *,
        status: str | None = None,
        progress: int | None = None,
        line: str | None = None,
    ) -> None:
        t = self.task(server_id)
        with self._lock:
            if status is not None:
                t.status = status
            if progress is not None:
                t.progress = progress
            if line is not None:
                t.log.append(line)
            t.dirty = True

    def task_id(self, server_id: str | None) -> str | None:
        t = self._tasks.get(server_id)
        return t.task_id if t else None

    def audit(self, row: Mapping[str, Any]) -> None:
        with self._lock:
            if len(self._audit) < MAX_AUDIT_BUFFER:
                self._audit.append(dict(row))

    def step_row(self, row: Mapping[str, Any]) -> None:
        """Buffer one workflow_executions write (a step's start or end). step_number counts from 1
        per claim; the flush adds the numbers earlier runs of the job used."""
        with self._lock:
            if len(self._steps) < MAX_STEP_BUFFER:  # bounded through a long outage
                self._steps.append(dict(row))

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(
                self._lines
                or self._patch
                or self._audit
                or self._steps
                or self._inflight
                or any(t.dirty or t.inflight for t in self._tasks.values())
            )

    # -- flushing ------------------------------------------------------------------------------
    def _take(self) -> tuple[dict[str, Any], list[str]]:
        with self._lock:
            patch, lines = self._patch, self._lines
            if self._dropped:
                lines = [
                    log_line(f"{self._dropped} log lines dropped while the backend was unreachable", "WARN")
                ]
                lines += self._lines
                self._dropped = 0
            self._patch, self._lines = {}, []
            return patch, lines

    def flush(self) -> bool:
        """Send what is buffered. True when everything was written (or dropped because not ours)."""
        if self.lost or self.finished_status:
            return True
        with self._flush_lock:
            try:
                self._flush_job()
                self._flush_tasks()
                self._flush_audit()
                self._flush_steps()
            except AgentError as exc:
                if isinstance(exc, AuthError):
                    log.error("job %s: backend refused the service-role key: %s", self.claim.job_id, exc)
                if self.last_error is None:  # once per outage, not once per tick
                    log.info("job %s: flush deferred, writes kept in the buffer: %s", self.claim.job_id, exc)
                self.last_error = str(exc)
                return False
            if self.last_error is not None:
                log.info("job %s: deferred writes flushed", self.claim.job_id)
                self.last_error = None
            return True

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _flush_job(self) -> None:
        """Send the in-flight batch (again, after a failure), else the buffer as a new batch."""
        if self._inflight is None:
            patch, lines = self._take()
            if not patch and not lines:
                return
            self._inflight = (self._next_seq(), patch, lines)
        seq, patch, lines = self._inflight
        ok = self.store.update_job(self.claim, patch, lines, allow_cancelled=self.allow_cancelled, seq=seq)
        if not ok and self._resolve_refusal():
            self.store.update_job(self.claim, patch, lines, allow_cancelled=True, seq=seq)
        self._inflight = None

    def _resolve_refusal(self) -> bool:
        """A guarded write was refused: learn why. True when the job is cancelled but still ours."""
        states = self.store.job_states([self.claim])
        st = states[0] if states else None
        if st and st.owned and st.status in ("cancelled", "paused"):
            if not self.allow_cancelled:  # same wording as the daemon's state poll
                log.info("job %s: %s by the UI (seen on a write)", self.claim.job_id, st.status)
            self.allow_cancelled = True
            if self._on_cancelled:
                self._on_cancelled(st.status)
            return True
        self.mark_lost()
        return False

    def mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            with self._lock:
                self._lines, self._patch, self._tasks, self._audit = [], {}, {}, []
                self._steps = []
                self._inflight = self._final = None
            if self._on_lost:
                self._on_lost()

    def _flush_tasks(self) -> None:
        with self._lock:
            todo = [t for t in self._tasks.values() if t.dirty or t.inflight]
        for t in todo:
            if t.inflight is None:
                with self._lock:
                    status, progress, lines = t.status, t.progress, t.log
                    t.log, t.dirty = [], False
                    t.seq += 1
                    text = "".join(line + "\n" for line in lines)[-TASK_LOG_CHARS:] or None
                    t.inflight = (t.seq, status, progress, text)
            task_id = self._upsert_task(t, *t.inflight)  # raises: stays in flight, re-sent as is
            t.inflight = None
            if task_id:
                t.task_id = str(task_id)

    def _upsert_task(
        self, t: _TaskPending, seq: int, status: str | None, progress: int | None, text: str | None
    ) -> Any:
        for _ in range(2):
            task_id = self.store.upsert_task(
                self.claim,
                server_id=t.server_id,
                task_id=t.task_id,
                status=status,
                progress=progress,
                log_text=text,
                allow_cancelled=self.allow_cancelled,
                seq=seq,
            )
            if task_id or self.allow_cancelled or not self._resolve_refusal():
                return task_id
        return None

    def _flush_audit(self) -> None:
        with self._lock:
            rows, self._audit = self._audit, []
        if not rows:
            return
        try:
            self.store.insert_audit(rows)  # client-made ids + ignore-duplicates: re-sending is safe
        except AgentError as exc:
            # Audit rows are best effort: keep them for the next flush unless the backend rejects them.
            if getattr(exc, "status", None) and 400 <= exc.status < 500:  # type: ignore[attr-defined]
                log.warning("job %s: %d idrac_commands rows rejected: %s", self.claim.job_id, len(rows), exc)
                return
            with self._lock:
                self._audit = rows + self._audit
            raise

    def _flush_steps(self) -> None:
        """Send the buffered step-row writes in order; they leave the buffer only once confirmed."""
        with self._lock:
            rows = list(self._steps)
        if not rows or self.lost:
            return
        try:
            if self._step_base is None:
                self._step_base = self.store.last_step_number(self.claim.job_id)
            sent = [dict(r, step_number=int(r["step_number"]) + self._step_base) for r in rows]
            ok = self.store.upsert_steps(self.claim, sent, allow_cancelled=self.allow_cancelled)
            if not ok and not self.allow_cancelled and self._resolve_refusal():
                ok = self.store.upsert_steps(self.claim, sent, allow_cancelled=True)
        except AgentError as exc:
            # Step rows are bookkeeping: a row the backend rejects as such (400/404/409, e.g. an old
            # schema) is dropped with a warning so it can never keep the job from finishing; others
            # (401/403 while a key rotates, 429, 5xx, outages) are kept and re-sent.
            if getattr(exc, "status", None) in STEP_REJECTED_STATUSES:
                log.warning("job %s: %d step rows rejected: %s", self.claim.job_id, len(rows), exc)
                with self._lock:
                    del self._steps[: len(rows)]
                return
            raise
        with self._lock:
            if ok:
                del self._steps[: len(rows)]
            # not ok: the job is not ours (mark_lost already emptied the buffer)

    # -- the end -------------------------------------------------------------------------------
    def finish(
        self,
        status: str,
        patch: Mapping[str, Any],
        *,
        give_up: threading.Event | None = None,
        max_backoff: float = 15.0,
    ) -> str | None:
        """Write the final state (with every buffered line) once; retries through outages until it
        lands, the job turns out not to be ours, or `give_up` is set. Returns the stored status."""
        delay = 0.5
        while not self.lost:
            try:
                with self._flush_lock:
                    self._flush_tasks()
                    self._flush_audit()
                    self._flush_steps()  # before the end: a paused job's claim is released by it
                    self._flush_job()  # what is in flight first, exactly once
                    if self._final is None:
                        p, lines = self._take()
                        p.update(patch)
                        self._final = (self._next_seq(), p, lines)
                    seq, p, lines = self._final
                    if status == "paused":
                        result = self.store.release_paused(self.claim, p, lines)
                    else:
                        result = self.store.finish_job(self.claim, status, p, lines, seq=seq)
            except AgentError as exc:
                self.last_error = str(exc)
            else:
                if result is None:
                    self.mark_lost()
                    return None
                self.finished_status = result
                return result
            log.warning(
                "job %s: cannot record the end yet (%s); retrying", self.claim.job_id, self.last_error
            )
            if give_up is not None and give_up.wait(delay):
                return None
            if give_up is None:
                time.sleep(delay)
            delay = min(delay * 2, max_backoff)
        return None
