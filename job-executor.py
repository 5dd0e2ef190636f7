#!/usr/bin/env python3
"""Run DSM jobs: poll the jobs table, claim jobs atomically and run each through its handler.

Runs until SIGTERM or SIGINT: the first signal stops claiming and lets running jobs finish for up
to EXECUTOR_DRAIN_SECONDS, then interrupts them and records each as failed with its step; a second
signal skips the rest of the drain (interrupted jobs still get a few seconds to record their end).
Talks to the DSM backend (SUPABASE_URL: https, or http on a trusted network / the lab) with the
service-role key (SUPABASE_SERVICE_ROLE_KEY).
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib

lib.require_runtime()

from lib.cli import base_parser, make_env, run  # noqa: E402

# lib.cli.base_parser appends the exit-code table (lib.errors) once.
EPILOG = (
    "environment: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, EXECUTOR_ID, EXECUTOR_POLL_INTERVAL,\n"
    "  EXECUTOR_MAX_CONCURRENT_JOBS, EXECUTOR_LEASE_SECONDS, EXECUTOR_HEARTBEAT_SECONDS,\n"
    "  EXECUTOR_DRAIN_SECONDS, EXECUTOR_JOB_TYPES, IDRAC_USER, IDRAC_PASSWORD, IDRAC_*, POWER_*\n"
    "  (see README.md)\n"
    "--check exits 0 when every line is ok, else with the code of the first FAIL line."
)

FLAG_MAP = {
    "executor_id": "EXECUTOR_ID",
    "poll_interval": "EXECUTOR_POLL_INTERVAL",
    "max_jobs": "EXECUTOR_MAX_CONCURRENT_JOBS",
    "job_types": "EXECUTOR_JOB_TYPES",
}


def parser():
    p = base_parser(Path(__file__).name, __doc__, EPILOG)
    p.add_argument(
        "--once", action="store_true", help="run until nothing runnable is left, then exit (cron, tests)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check configuration, backend reachability, the key and the migrations, then exit",
    )
    p.add_argument("--executor-id", help="executor identity (EXECUTOR_ID; default executor-<hostname>)")
    p.add_argument("--poll-interval", help="seconds between polls (EXECUTOR_POLL_INTERVAL)")
    p.add_argument("--max-jobs", help="jobs run at once (EXECUTOR_MAX_CONCURRENT_JOBS)")
    p.add_argument("--job-types", help="comma-separated job types to serve (EXECUTOR_JOB_TYPES)")
    return p


def main(args) -> int:
    from lib.executor import app, signals

    built = app.build(make_env(args, FLAG_MAP), once=args.once)
    if args.check:
        # The checklist is the output: no INFO retry lines of the HTTP layer in between.
        logging.getLogger("lib.http").setLevel(logging.WARNING)
        rows = app.check(built)
        width = max(len(r.name) for r in rows)
        for r in rows:
            word = "FAIL" if not r.ok else "WARN" if r.warn else "ok  "
            print(f"{word}  {r.name:<{width}}  {r.detail}")
        return app.check_exit_code(rows)
    signals.install(built.daemon.request_stop)
    return built.daemon.run()


if __name__ == "__main__":
    run(parser(), main, sigterm_interrupts=False)
