"""The executor daemon: poll, claim, run jobs in threads, keep leases, heartbeat, drain on SIGTERM.

Threads:
  main     the poll loop: rescue expired leases, claim up to the free slots, start job threads.
  lease    renews running jobs' leases every third of the lease and reads their states (cancel or
           pause noticed within ~1.5 s). Its own thread, with a bounded call timeout, so a slow
           flush can never delay a renewal until the lease lapses.
  keeper   flushes each job's write buffer, under a time budget per pass (the jobs it did not
           reach go first on the next pass).
  beat     the executor_heartbeats row every EXECUTOR_HEARTBEAT_SECONDS (stamped with the
           database clock), activity settings refresh, and the warning when another live process
           uses the same EXECUTOR_ID.
  job-*    one per running job (at most EXECUTOR_MAX_CONCURRENT_JOBS), each a runner.JobRun.
The loop never touches SQL (store.py does) and never dies of a backend error: it backs off (capped)
and resumes, while running jobs keep going with their writes buffered.

Start-up never fails another process's live jobs: it fails only this executor id's jobs whose lease
has EXPIRED. Two processes sharing one EXECUTOR_ID (a daemon and a hand-run --once) therefore leave
each other's running jobs alone; the heartbeat warns loudly about the shared id.

Paused: a running job the UI sets to `paused` is stopped like a cancel (the handler's cleanup runs),
its claim is released and its status stays `paused` (runner.py, executor_release_paused_job).

Shutdown (SIGTERM): stop claiming, let running jobs finish for EXECUTOR_DRAIN_SECONDS, interrupt the
rest and give them SHUTDOWN_GRACE to record their end, then record the end of any still stuck (a
blocking call that ignores interrupts) all in parallel under ONE deadline of FORCE_FAIL_SECONDS:
the whole stop fits in the drain + ~20 s (TimeoutStopSec in deploy/ must exceed that).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import handlers as registry
from lib import __version__
from lib.dsm.rest import PostgrestError
from lib.errors import AgentError
from lib.executor.context import Services
from lib.executor.errors import JobCancelled, JobPaused, LeaseLost, ShutdownInterrupt
from lib.executor.notify import SystemdNotifier
from lib.executor.runner import JobRun
from lib.executor.store import JobState, JobStore, schema_error

log = logging.getLogger(__name__)

STATE_POLL_SECONDS = 1.5  # how often running jobs' states are read (cancel noticed within ~2 s)
KEEPER_TICK = 0.3
WAIT_SLICE = 0.1  # main-loop waits re-check the stop flags this often
BACKOFF_MAX = 30.0
SHUTDOWN_GRACE = 10.0  # after the drain: time for interrupted handlers to unwind and record
FORCE_FAIL_SECONDS = 8.0  # then: one shared deadline to record the end of every stuck job
JOIN_SECONDS = 2.0  # then: one shared deadline for the helper threads
FLUSH_BUDGET = 2.0  # seconds of flushing per keeper pass before yielding to the next pass


@dataclass
class Stats:
    poll_count: int = 0
    jobs_processed: int = 0
    claims: int = 0
    last_error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    unhandled_pending: list[str] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        settings: Any,  # lib.config.ExecutorSettings
        store: JobStore,
        services: Services,
        *,
        once: bool = False,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.services = services
        self.once = once
        self.notifier = notifier or SystemdNotifier()
        self.stats = Stats()
        self.active: dict[str, JobRun] = {}
        self._active_lock = threading.Lock()
        self._wake = threading.Event()
        # Plain flags, set from the signal handler: a handler must not take a lock the interrupted
        # main thread may hold (threading.Event.set would deadlock inside Event.wait's own lock).
        self._stopping = False
        self._forced = False
        self._keeper_stop = threading.Event()
        self._give_up = threading.Event()  # set at the very end: stop retrying final writes
        self._threads: list[threading.Thread] = []
        self.job_types, self.unknown_configured = self._types()
        self._idrac_types = {jt for jt in self.job_types if _uses_idrac(jt)}
        self._host = socket.gethostname()
        self._ip = _local_ip(self._host)  # once: no DNS lookup per heartbeat
        self._peer_warned: str | None = None

    # -- configuration -------------------------------------------------------------------------
    def _types(self) -> tuple[list[str], list[str]]:
        available = registry.available_types()
        wanted = list(self.settings.job_types or ())
        if wanted:
            return [t for t in wanted if t in available], [t for t in wanted if t not in available]
        return available, []

    def claimable_types(self) -> list[str]:
        if self.services.idrac_slots.paused:
            return [t for t in self.job_types if t not in self._idrac_types]
        return list(self.job_types)

    # -- control -------------------------------------------------------------------------------
    def request_stop(self, force: bool = False) -> None:
        """Signal handler entry: stop claiming; with force, interrupt running jobs now. Lock-free:
        the main loop's waits are sliced (WAIT_SLICE) and look at these flags."""
        self._stopping = True
        if force:
            self._forced = True

    # -- main ----------------------------------------------------------------------------------
    def run(self) -> int:
        log.info(
            "executor %s starting: types=%s max_jobs=%d poll=%.2gs lease=%ds",
            self.settings.executor_id,
            ",".join(self.job_types) or "(none)",
            self.settings.max_concurrent_jobs,
            self.settings.poll_interval,
            self.store.lease_seconds,
        )
        if self.unknown_configured:
            log.warning(
                "EXECUTOR_JOB_TYPES names types no handler here knows: %s", ", ".join(self.unknown_configured)
            )
        if not self.job_types:
            log.warning("no job types to serve: this executor will claim nothing")
        self._start_thread("lease", self._lease_loop)
        self._start_thread("keeper", self._keeper)
        self._start_thread("beat", self._heartbeat_loop)
        try:
            self._poll_loop()
        finally:
            self._shutdown()
        return 0

    def _start_thread(self, name: str, target: Any) -> None:
        t = threading.Thread(target=target, name=f"{name}-{self.settings.executor_id}", daemon=True)
        t.start()
        self._threads.append(t)

    def _poll_loop(self) -> None:
        startup_done = False
        backoff = 0.0
        next_rescue = 0.0
        while not self._stopping:
            self.notifier.watchdog()
            try:
                if not startup_done:  # only OUR jobs whose lease EXPIRED: never a live process's
                    for row in self.store.fail_stale(own_only=True):
                        log.warning(
                            "failed own job %s left running by a previous run whose lease expired (step %s)",
                            row.get("job_id"),
                            row.get("step"),
                        )
                    startup_done = True
                now = time.monotonic()
                if now >= next_rescue:
                    for row in self.store.fail_stale(own_only=False):
                        log.warning(
                            "job %s: executor %s stopped responding during step %s; marked failed",
                            row.get("job_id"),
                            row.get("executor_id"),
                            row.get("step"),
                        )
                    next_rescue = now + max(self.settings.poll_interval, 2.0)
                free = self.settings.max_concurrent_jobs - len(self.active)
                rows = self.store.claim(self.claimable_types(), free) if free > 0 else []
                self.stats.poll_count += 1
                if backoff:
                    log.info("backend reachable again")
                backoff = 0.0
                self.notifier.ready(f"serving {len(self.job_types)} job types")
            except PostgrestError as exc:
                if exc.schema_missing:  # not a hiccup: the migration is missing (exit 2, naming it)
                    raise schema_error(exc) from exc
                backoff = self._poll_failed(exc, backoff)
                continue
            except AgentError as exc:
                backoff = self._poll_failed(exc, backoff)
                continue
            for row in rows:
                self._start_job(row)
            if self.once and not rows and not self.active:
                log.info("--once: nothing runnable left")
                return
            if rows and len(rows) >= free:
                self._wait(
                    0.0
                    if len(self.active) < self.settings.max_concurrent_jobs
                    else self.settings.poll_interval
                )
            elif not rows:
                self._wait(self.settings.poll_interval)

    def _poll_failed(self, exc: AgentError, backoff: float) -> float:
        if self.once and not self.notifier.ready_sent and not self.active:
            raise exc  # --once under cron: an unreachable backend is an error exit, not a hang
        backoff = min(max(1.0, backoff * 2), BACKOFF_MAX)
        self.stats.last_error = f"backend: {exc}"
        log.warning("poll failed (%s); retrying in %.0f s", exc, backoff)
        self.notifier.status(f"backend unreachable: {exc}")
        self._wait(backoff)
        return backoff

    def _wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking on a freed slot or a signal; keeps the watchdog fed."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._wake.wait(min(left, WAIT_SLICE)):
                self._wake.clear()
                return
            self.notifier.watchdog()

    # -- jobs ----------------------------------------------------------------------------------
    def _start_job(self, row: dict[str, Any]) -> None:
        run = JobRun(row, self.services, give_up=self._give_up)
        with self._active_lock:
            self.active[run.job_id] = run
        self.stats.claims += 1
        t = threading.Thread(target=self._job_thread, args=(run,), name=f"job-{run.job_id[:8]}", daemon=True)
        t.start()

    def _job_thread(self, run: JobRun) -> None:
        try:
            outcome = run.run()
            log.info("job %s: %s", run.job_id, outcome.status)
        except BaseException:  # never let a job thread die silently
            log.exception("job %s: job thread crashed", run.job_id)
        finally:
            with self._active_lock:
                self.active.pop(run.job_id, None)
            self.stats.jobs_processed += 1
            self._wake.set()

    # -- keeper: flush ----------------------------------------------------------------------------
    def _keeper(self) -> None:
        start = 0  # rotates, so a slow backend cannot starve the same jobs pass after pass
        while not self._keeper_stop.wait(KEEPER_TICK):
            with self._active_lock:
                runs = list(self.active.values())
            if not runs:
                continue
            start %= len(runs)
            order = runs[start:] + runs[:start]
            deadline = time.monotonic() + FLUSH_BUDGET
            for i, r in enumerate(order):
                if time.monotonic() >= deadline:
                    start += i
                    break
                if r.writer.pending:
                    r.writer.flush()
            else:
                start += 1

    # -- lease: renew and watch (independent of flushing) ---------------------------------------
    def _lease_loop(self) -> None:
        next_renew = time.monotonic() + self.store.lease_seconds / 3
        while not self._keeper_stop.wait(STATE_POLL_SECONDS):
            next_renew = self.lease_tick(next_renew)

    def lease_tick(self, next_renew: float) -> float:
        """One renewal or state read of the live jobs; returns when the next renewal is due."""
        with self._active_lock:
            live = [r for r in self.active.values() if not r.writer.lost and not r.writer.finished_status]
        if not live:
            return time.monotonic() + self.store.lease_seconds / 3
        now = time.monotonic()
        claims = [r.claim for r in live]
        try:
            if now >= next_renew:
                states = self.store.renew(claims)
                next_renew = now + self.store.lease_seconds / 3
            else:
                states = self.store.job_states(claims)
        except AgentError as exc:  # renew again on the next tick, not a third of the lease later
            log.warning("lease renewal/state read failed (retrying): %s", exc)
            return next_renew
        by_id = {r.job_id: r for r in live}
        for st in states:
            run = by_id.get(st.job_id)
            if run is not None:
                self._dispatch(run, st)
        return next_renew

    def _dispatch(self, run: JobRun, st: JobState) -> None:
        if run.writer.finished_status:
            return
        if st.owned and st.status == "running":
            if st.graceful_cancel and run.ctx is not None and not run.ctx.graceful_cancel_requested:
                run.ctx.graceful_cancel_requested = True
                run.ctx.log("graceful cancel requested: finishing the current target, then stopping", "WARN")
            return
        if st.owned and st.status in ("cancelled", "paused"):
            if not run.writer.allow_cancelled:
                log.info("job %s: %s by the UI during step %s", run.job_id, st.status, run.current_step)
            run.writer.allow_cancelled = True
            run.interrupt(JobPaused if st.status == "paused" else JobCancelled)
            return
        log.warning("job %s: no longer ours (status %s); stopping work on it", run.job_id, st.status)
        run.writer.mark_lost()
        run.interrupt(LeaseLost)

    # -- heartbeat -----------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while True:
            self.heartbeat_once()
            if self._keeper_stop.wait(self.settings.heartbeat_seconds):
                return

    def heartbeat_once(self) -> None:
        try:
            settings = self.store.activity_settings()
            if settings:
                self.services.idrac_slots.set_limit(int(settings.get("idrac_max_concurrent") or 4))
                self.services.idrac_slots.paused = bool(settings.get("pause_idrac_operations"))
            self.stats.unhandled_pending = self.store.unhandled_pending_types(self.job_types)
            peer = self.store.heartbeat(self.heartbeat_row())
        except AgentError as exc:
            log.debug("heartbeat failed: %s", exc)
            return
        if peer is not None and self._peer_warned != peer.startup_time:
            self._peer_warned = peer.startup_time
            log.warning(
                "ANOTHER LIVE PROCESS uses EXECUTOR_ID %s (host %s, started %s, seen %.0f s ago): give "
                "each process its own EXECUTOR_ID; neither fails the other's running jobs, but the "
                "heartbeat row flips between them",
                self.settings.executor_id,
                peer.hostname,
                peer.startup_time,
                peer.seen_seconds_ago,
            )

    def heartbeat_row(self) -> dict[str, Any]:
        """The executor_heartbeats row. capabilities = the job types served (issue 7); problems go
        to last_error; last_seen_at is set by the database (executor_heartbeat)."""
        problems = []
        if self.stats.last_error:
            problems.append(self.stats.last_error)
        broken = registry.broken_types()
        if broken:
            problems.append(
                "handlers that cannot load (their jobs stay pending): " + ", ".join(sorted(broken))
            )
        if self.unknown_configured:
            problems.append(
                "EXECUTOR_JOB_TYPES names types without a handler: " + ", ".join(self.unknown_configured)
            )
        if self.stats.unhandled_pending:
            problems.append(
                "pending jobs of types no handler here serves (left pending): "
                + ", ".join(self.stats.unhandled_pending)
            )
        return {
            "executor_id": self.settings.executor_id,
            "hostname": self._host,
            "ip_address": self._ip,
            "version": __version__,
            "capabilities": list(self.job_types),
            "poll_count": self.stats.poll_count,
            "jobs_processed": self.stats.jobs_processed,
            "startup_time": self.stats.started_at.isoformat(),
            "last_error": "; ".join(problems) or None,
        }

    # -- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        # Logged after the poll loop returned: no claim is in flight any more (tests wait for it).
        log.info("stopped claiming new jobs")
        self.notifier.stopping()
        if self.active:
            drain = 0.0 if self._forced else self.settings.drain_seconds
            log.info("stopping: waiting up to %.0f s for %d running jobs", drain, len(self.active))
            self.notifier.status(f"draining {len(self.active)} jobs")
            deadline = time.monotonic() + drain
            while self.active and time.monotonic() < deadline and not self._forced:
                self._wake.wait(WAIT_SLICE)
                self._wake.clear()
                self.notifier.watchdog()
            with self._active_lock:
                runs = list(self.active.values())
            for r in runs:
                log.warning("job %s: interrupting (drain time over) during step %s", r.job_id, r.current_step)
                r.interrupt(ShutdownInterrupt)
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while self.active and time.monotonic() < deadline:
                self._wake.wait(WAIT_SLICE)
                self._wake.clear()
            with self._active_lock:
                stuck = list(self.active.values())
            if stuck:  # handlers ignoring interrupts (a blocking call): record their end for them
                self._force_fail_all(stuck)
        self._give_up.set()
        self._keeper_stop.set()
        deadline = time.monotonic() + JOIN_SECONDS
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        log.info("executor %s stopped", self.settings.executor_id)

    def _force_fail_all(self, runs: list[JobRun]) -> None:
        """Record the end of every stuck job in parallel, all under one deadline."""
        give_up = threading.Event()
        threads = [
            threading.Thread(
                target=self._force_fail, args=(r, give_up), name=f"fail-{r.job_id[:8]}", daemon=True
            )
            for r in runs
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + FORCE_FAIL_SECONDS
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        give_up.set()  # a writer still retrying stops now; a call in progress is abandoned
        late = [r.job_id for r, t in zip(runs, threads, strict=True) if t.is_alive()]
        if late:
            log.error("could not record the end of %d jobs before exiting: %s", len(late), ", ".join(late))

    def _force_fail(self, run: JobRun, give_up: threading.Event) -> None:
        step = run.current_step
        retry_safe = run.ctx.current_retry_safe if run.ctx else True
        safety = (
            "safe to retry" if retry_safe else "NOT safe to retry blindly: check the target's state first"
        )
        msg = f"executor {self.settings.executor_id} shut down during step {step} ({safety})"
        run.writer.line(msg, "ERROR")
        try:
            run.writer.finish(
                "failed",
                {"error": msg, "failed_step": step, "retry_safe": retry_safe, "current_step": step},
                give_up=give_up,
            )
        except Exception:  # a thread that records an end must not die silently
            log.exception("job %s: recording the end failed", run.job_id)


def _uses_idrac(job_type: str) -> bool:
    try:
        return bool(getattr(registry.get(job_type), "uses_idrac", False))
    except AgentError:
        return False


def _local_ip(host: str) -> str | None:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None
