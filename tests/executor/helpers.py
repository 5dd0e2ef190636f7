"""Helpers for the executor tests: spawn executor processes against the lab backend, add jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXTRA = "tests.executor.lab_handlers:HANDLERS"


def executor_env(backend: Any, executor_id: str, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXECUTOR_", "SUPABASE_", "NOTIFY_", "WATCHDOG_"))
    }
    env.update(
        SUPABASE_URL=backend.url,
        SUPABASE_SERVICE_ROLE_KEY=backend.service_role_key,
        EXECUTOR_ID=executor_id,
        EXECUTOR_POLL_INTERVAL="0.2",
        EXECUTOR_EXTRA_HANDLERS=EXTRA,
        EXECUTOR_HEARTBEAT_SECONDS="1",
        LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
    )
    env.update(overrides)
    return env


class Executor:
    """One `job-executor.py` process; stderr goes to a file the test can read."""

    def __init__(self, backend: Any, executor_id: str, log_dir: Path, *args: str, **env: str) -> None:
        self.executor_id = executor_id
        self.log_path = log_dir / f"{executor_id}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "job-executor.py"), *args],
            env=executor_env(backend, executor_id, **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
        )

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def insert_jobs(
    backend: Any,
    job_type: str,
    count: int = 1,
    *,
    details: dict | None = None,
    target_scope: dict | None = None,
    priority: str | None = None,
    schedule_sql: str = "NULL",
    created_offset_s: float = 0.0,
) -> list[str]:
    rows = backend.sql(
        f"""INSERT INTO jobs (job_type, details, target_scope, priority, schedule_at, created_at)
            SELECT %s, %s::jsonb, %s::jsonb, COALESCE(%s, 'normal'), {schedule_sql},
                   now() + make_interval(secs => %s) + g * interval '1 microsecond'
              FROM generate_series(1, %s) AS g
            RETURNING id""",
        (
            job_type,
            json.dumps(details) if details is not None else None,
            json.dumps(target_scope) if target_scope is not None else None,
            priority,
            created_offset_s,
            count,
        ),
    )
    return [str(r["id"]) for r in rows]


def job(backend: Any, job_id: str) -> dict[str, Any]:
    return backend.sql("SELECT * FROM jobs WHERE id = %s", (job_id,))[0]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def runs_per_job(backend: Any) -> dict[str, int]:
    """How many times each job really executed (the lab handlers' side-effect rows)."""
    rows = backend.sql(
        "SELECT job_id::text AS id, count(*) AS n FROM idrac_commands WHERE command_type = 'lab_run' GROUP BY job_id"
    )
    return {r["id"]: int(r["n"]) for r in rows}
