#!/usr/bin/env python3
"""Run DSM jobs: poll the jobs table, claim jobs atomically and run each through its handler.

Runs until SIGTERM or SIGINT (a second signal stops at once). Talks to the DSM backend only over
HTTPS with the service-role key (SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib

lib.require_runtime()

from lib.cli import base_parser, make_env, run  # noqa: E402
from lib.errors import exit_codes_help  # noqa: E402

EPILOG = (
    "environment: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, EXECUTOR_ID, EXECUTOR_POLL_INTERVAL,\n"
    "  EXECUTOR_MAX_CONCURRENT_JOBS, EXECUTOR_LEASE_SECONDS, EXECUTOR_HEARTBEAT_SECONDS,\n"
    "  EXECUTOR_DRAIN_SECONDS, EXECUTOR_JOB_TYPES, IDRAC_USER, IDRAC_PASSWORD (see README.md)\n\n"
    + exit_codes_help()
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
        rows = app.check(built)
        width = max(len(name) for name, _, _ in rows)
        for name, ok, detail in rows:
            print(f"{'ok  ' if ok else 'FAIL'}  {name:<{width}}  {detail}")
        return app.check_exit_code(rows)
    signals.install(built.daemon.request_stop)
    return built.daemon.run()


if __name__ == "__main__":
    run(parser(), main, sigterm_interrupts=False)
