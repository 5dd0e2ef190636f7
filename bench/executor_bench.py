"""Executor benchmark against lab/backend: throughput, pickup latency, double runs, SIGKILL recovery.

    python bench/executor_bench.py [--jobs 2000] [--executors 1,2,4] [--trickle 200] [--rate 10]

For each executor count it runs real `job-executor.py` processes (default settings: poll 2 s,
4 jobs at once) with the lab's light handler (tests/executor/lab_handlers.py, registered through
the EXECUTOR_EXTRA_HANDLERS test/bench hook) and measures, on the database clock:

  burst      --jobs jobs inserted at once: jobs/s from the first start to the last completion,
             and double runs (jobs whose side effect exists more than once: must be 0)
  pickup     --trickle jobs inserted at --rate per second while the executors idle-poll:
             created_at -> started_at p50 / p95 (the issue's target: < poll interval + 0.5 s)
  recovery   one executor holding a long job is killed with SIGKILL: seconds from the kill until
             a surviving executor has marked that job failed (target: < lease + one poll), run
             with EXECUTOR_LEASE_SECONDS=--lease so the bench stays short.
Prints one table. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.backend.launcher import start_backend  # noqa: E402
from tests.executor.lab_handlers import LIGHT_TYPE, SCRIPTED_TYPE  # noqa: E402

EXTRA = "tests.executor.lab_handlers:HANDLERS"


def spawn(backend, executor_id: str, log_dir: Path, **env: str) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTOR_", "SUPABASE_"))}
    e.update(
        SUPABASE_URL=backend.url,
        SUPABASE_SERVICE_ROLE_KEY=backend.service_role_key,
        EXECUTOR_ID=executor_id,
        EXECUTOR_EXTRA_HANDLERS=EXTRA,
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        **env,
    )
    log = open(log_dir / f"{executor_id}.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(
        [sys.executable, str(ROOT / "job-executor.py")], env=e, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(backend, sql: str, params=(), timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not backend.sql(sql, params)[0]["done"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for: {sql}")
        time.sleep(0.2)


def burst(backend, n_exec: int, jobs: int, log_dir: Path) -> dict:
    backend.reset()
    procs = [spawn(backend, f"bench-{n_exec}-{i}", log_dir) for i in range(n_exec)]
    time.sleep(1.0)  # let them start (import time is not what we measure)
    backend.sql(
        "INSERT INTO jobs (job_type, created_at) SELECT %s, now() FROM generate_series(1, %s)",
        (LIGHT_TYPE, jobs),
    )
    wait_for(backend, "SELECT count(*) = 0 AS done FROM jobs WHERE status IN ('pending', 'running')")
    stop(procs)
    row = backend.sql(
        """SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
                  extract(epoch FROM max(completed_at) - min(started_at)) AS span
             FROM jobs"""
    )[0]
    doubles = backend.sql(
        """SELECT count(*) AS n FROM (SELECT job_id FROM idrac_commands WHERE command_type = 'lab_run'
                                      GROUP BY job_id HAVING count(*) > 1) d"""
    )[0]["n"]
    missing = backend.sql(
        """SELECT count(*) AS n FROM jobs j WHERE NOT EXISTS
             (SELECT 1 FROM idrac_commands c WHERE c.job_id = j.id AND c.command_type = 'lab_run')"""
    )[0]["n"]
    span = float(row["span"] or 0) or 1e-9
    return {
        "completed": row["completed"],
        "jobs_s": row["completed"] / span,
        "doubles": doubles,
        "missing": missing,
    }


def pickup(backend, n_exec: int, count: int, rate: float, log_dir: Path) -> dict:
    backend.reset()
    procs = [spawn(backend, f"pick-{n_exec}-{i}", log_dir) for i in range(n_exec)]
    time.sleep(3.0)  # idle-polling, as in production
    for _ in range(count):
        backend.sql("INSERT INTO jobs (job_type) VALUES (%s)", (LIGHT_TYPE,))
        time.sleep(1.0 / rate)
    wait_for(backend, "SELECT count(*) = 0 AS done FROM jobs WHERE status IN ('pending', 'running')")
    stop(procs)
    row = backend.sql(
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) AS p50,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) AS p95,
                  max(extract(epoch FROM started_at - created_at)) AS pmax
             FROM jobs"""
    )[0]
    return {k: float(v) for k, v in row.items()}


def recovery(backend, n_exec: int, lease: int, log_dir: Path) -> float | None:
    if n_exec < 2:
        return None
    backend.reset()
    env = {"EXECUTOR_LEASE_SECONDS": str(lease)}
    procs = {f"rec-{n_exec}-{i}": spawn(backend, f"rec-{n_exec}-{i}", log_dir, **env) for i in range(n_exec)}
    time.sleep(1.0)
    jid = backend.sql(
        'INSERT INTO jobs (job_type, details) VALUES (%s, \'{"mode": "sleep", "seconds": 3600}\') RETURNING id',
        (SCRIPTED_TYPE,),
    )[0]["id"]
    wait_for(backend, "SELECT status = 'running' AS done FROM jobs WHERE id = %s", (jid,), timeout=60)
    holder = backend.sql("SELECT executor_id FROM jobs WHERE id = %s", (jid,))[0]["executor_id"]
    procs[holder].kill()
    killed_at = backend.sql("SELECT now() AS t")[0]["t"]
    procs[holder].wait()
    wait_for(
        backend, "SELECT status = 'failed' AS done FROM jobs WHERE id = %s", (jid,), timeout=lease * 4 + 60
    )
    done = backend.sql("SELECT completed_at FROM jobs WHERE id = %s", (jid,))[0]["completed_at"]
    stop([p for k, p in procs.items() if k != holder])
    return (done - killed_at).total_seconds()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--executors", default="1,2,4")
    ap.add_argument("--trickle", type=int, default=200, help="jobs of the pickup-latency phase")
    ap.add_argument("--rate", type=float, default=10.0, help="jobs per second in the pickup phase")
    ap.add_argument(
        "--lease", type=int, default=15, help="EXECUTOR_LEASE_SECONDS of the recovery phase (minimum 15)"
    )
    args = ap.parse_args()
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"executor-bench-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    backend = start_backend()
    rows = []
    try:
        for n in [int(x) for x in args.executors.split(",")]:
            b = burst(backend, n, args.jobs, log_dir)
            p = pickup(backend, n, args.trickle, args.rate, log_dir)
            r = recovery(backend, n, args.lease, log_dir)
            rows.append((n, b, p, r))
            print(f"  ... {n} executor(s) done", file=sys.stderr)
    finally:
        backend.close()
    print(
        f"\nexecutor bench: {args.jobs} light jobs burst; pickup: {args.trickle} jobs at {args.rate:g}/s, "
        f"poll 2 s (default); recovery lease {args.lease} s; logs in {log_dir}\n"
    )
    head = (
        "executors",
        "burst jobs/s",
        "completed",
        "double runs",
        "missing",
        "pickup p50 s",
        "pickup p95 s",
        "pickup max s",
        "recovery s",
    )
    print(" | ".join(head))
    print(" | ".join("-" * len(h) for h in head))
    for n, b, p, r in rows:
        cells = (
            str(n),
            f"{b['jobs_s']:.1f}",
            str(b["completed"]),
            str(b["doubles"]),
            str(b["missing"]),
            f"{p['p50']:.2f}",
            f"{p['p95']:.2f}",
            f"{p['pmax']:.2f}",
            "-" if r is None else f"{r:.1f}",
        )
        print(" | ".join(c.rjust(len(h)) for c, h in zip(cells, head, strict=True)))
    print(
        f"\ntargets: p95 < 2.5 s; >= 50 jobs/s with 4 executors; 0 double runs; recovery < {args.lease + 2} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
