"""The pieces of lab/demo.py: what it started (and stops), child processes, signals, the jobs."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("demo")

ROOT = Path(__file__).resolve().parent.parent
STOP_WAIT_SECONDS = 10.0


# ---------------------------------------------------------------------------------------------------
# Signals: Ctrl-C and SIGTERM become KeyboardInterrupt, but never between starting something and
# recording that it must be stopped (a shielded section delivers them at its end).
# ---------------------------------------------------------------------------------------------------
class Interrupts:
    def __init__(self) -> None:
        self._depth = 0
        self._pending = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending:
                self._pending = False
                raise KeyboardInterrupt


interrupts = Interrupts()


# ---------------------------------------------------------------------------------------------------
# What the demo started, stopped in reverse order
# ---------------------------------------------------------------------------------------------------
class Stack:
    def __init__(self) -> None:
        self._items: list[tuple[str, Callable[[], None]]] = []
        self.running: set[subprocess.Popen[Any]] = set()  # short-lived programs (syncs, executor)

    def push(self, name: str, stop: Callable[[], None]) -> None:
        self._items.append((name, stop))

    def close(self) -> list[str]:
        """Stop everything, last started first; returns what was stopped, in that order."""
        for proc in list(self.running):
            stop_process(proc)
        self.running.clear()
        done = []
        while self._items:
            name, stop = self._items.pop()
            try:
                stop()
                done.append(name)
            except Exception as exc:  # keep going: the rest must still be stopped
                log.error("could not stop %s: %s", name, exc)
        return done


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the demo dies, even by SIGKILL (nothing left behind).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """A clean environment, as an operator's cron line would have: no inherited OME_*/DSM_* values."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "DSM_LAB_CACHE") if k in os.environ}
    base.setdefault("LANG", "C.UTF-8")
    return {**base, **extra}


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_WAIT_SECONDS)
    for stream in (proc.stdout, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def spawn_json(
    stack: Stack, name: str, args: list[str], *, timeout: float = 30.0
) -> tuple[Any, dict[str, Any]]:
    """Start a lab server (`python <args>`) that prints one JSON line when ready; stopped by `stack`."""
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the stop function
    with interrupts.shielded():
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=child_env({}),
            text=True,
            preexec_fn=_die_with_parent,
        )

        def stop() -> None:
            stop_process(proc)
            errors.close()

        stack.push(f"{name} (pid {proc.pid})", stop)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        errors.seek(0)
        tail = errors.read().decode(errors="replace")[-1500:]
        raise RuntimeError(f"{name} did not start: {tail.strip() or 'no output'}")
    return proc, json.loads(line)


@dataclass
class ProgramRun:
    name: str
    code: int | None
    seconds: float
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any] | None:
        lines = self.stdout.strip().splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except ValueError:
            return None

    def last_error_line(self) -> str:
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return lines[-1][-200:] if lines else "no output"

    def describe(self) -> str:
        rep = self.report
        if not rep:
            return f"exit {self.code} in {self.seconds:.1f} s: {self.last_error_line()}"
        return (
            f"{rep.get('seen', 0)} seen, {rep.get('sent', 0)} sent, {rep.get('new', 0)} new, "
            f"{rep.get('updated', 0)} updated, {rep.get('auto_linked', 0)} linked, "
            f"{len(rep.get('skipped') or [])} skipped, {len(rep.get('failed') or [])} failed "
            f"(exit {self.code}, {self.seconds:.1f} s)"
        )


def run_program(
    stack: Stack, name: str, args: list[str], env: dict[str, str], work: Path, *, timeout: float
) -> ProgramRun:
    """Run one of the agent's programs to its end, as an operator would; stderr kept for the report."""
    started = time.monotonic()
    err_path = work / f"{name.split()[0]}.stderr"
    with open(err_path, "w+") as err:
        with interrupts.shielded():
            proc = subprocess.Popen(
                [sys.executable, *args],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=child_env(env),
                text=True,
                preexec_fn=_die_with_parent,
            )
            stack.running.add(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            out = ""
            log.error("%s did not finish within %.0f s; stopped it", name, timeout)
        except BaseException:  # Ctrl-C: stop it here, before forgetting it
            with interrupts.shielded():
                stop_process(proc)
            raise
        finally:
            stack.running.discard(proc)
        err.seek(0)
        stderr = err.read()
    run = ProgramRun(name, proc.returncode, time.monotonic() - started, out or "", stderr)
    if run.code not in (0, 1):
        log.warning("%s exit %s: %s", name, run.code, run.last_error_line())
    return run


# ---------------------------------------------------------------------------------------------------
# Jobs, inserted as the DSM UI does (status pending, details often NULL, no job_tasks)
# ---------------------------------------------------------------------------------------------------
_BOOKKEEPING = ("] job completed", "] claimed by ", "] step: ")


def last_telling_line(console_log: list[str]) -> str:
    """The last console_log line that says something about the work, not the runner's bookkeeping
    ("step: postcheck", "job completed"); the very last line when every line is bookkeeping."""
    lines = [str(x) for x in console_log if x]
    for line in reversed(lines):
        if not any(mark in line for mark in _BOOKKEEPING):
            return line
    return lines[-1] if lines else ""


@dataclass
class DemoJob:
    label: str
    job_type: str
    id: str
    expect: str
    status: str = "pending"
    last_log: str = ""
    error: str = ""


@dataclass
class Jobs:
    backend: Any
    items: list[DemoJob] = field(default_factory=list)

    def add(
        self,
        label: str,
        job_type: str,
        scope: dict[str, Any],
        details: dict[str, Any] | None,
        *,
        expect: str = "completed",
    ) -> None:
        row = self.backend.sql(
            "INSERT INTO jobs (job_type, status, target_scope, details) VALUES (%s, 'pending', %s, %s) RETURNING id::text",
            (job_type, json.dumps(scope), json.dumps(details) if details is not None else None),
        )[0]
        self.items.append(DemoJob(label, job_type, row["id"], expect))

    def add_sync_jobs(self, vcenter_id: Any) -> None:
        """The sync job types, when this executor has handlers for them."""
        import handlers

        if "openmanage_sync" in handlers.HANDLERS:
            self.add("openmanage_sync (the OME sync as a job)", "openmanage_sync", {}, None)
        if "vcenter_sync" in handlers.HANDLERS:
            self.add(
                "vcenter_sync (the vCenter sync as a job)",
                "vcenter_sync",
                {"vcenter_ids": [str(vcenter_id)]},
                None,
            )

    def refresh(self) -> None:
        if not self.items:
            return
        rows = self.backend.sql(
            "SELECT id::text, status::text, details->'console_log' AS log, details->>'error' AS error"
            " FROM jobs WHERE id = ANY(%s::uuid[])",
            ([j.id for j in self.items],),
        )
        by_id = {r["id"]: r for r in rows}
        for job in self.items:
            row = by_id.get(job.id)
            if row:
                job.status, job.error = row["status"], row["error"] or ""
                job.last_log = last_telling_line(row["log"] or [])

    def unfinished(self) -> list[DemoJob]:
        self.refresh()
        return [j for j in self.items if j.status in ("pending", "running")]

    def done_count(self) -> int:
        return sum(1 for j in self.items if j.status in ("completed", "failed", "cancelled"))

    def all_as_expected(self) -> bool:
        return bool(self.items) and all(j.status == j.expect for j in self.items)

    def lines(self) -> list[str]:
        out = []
        for j in self.items:
            mark = "ok  " if j.status == j.expect else "FAIL"
            last = j.last_log or j.error or "(no log)"
            out.append(f"{mark} {j.status:<9} {j.label}\n         log: {last[:160]}")
        return out

    def __len__(self) -> int:
        return len(self.items)
