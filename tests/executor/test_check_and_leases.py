"""--check (configuration, backend, key, migrations), --once against a dead backend, live leases."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.executor.helpers import ROOT, Executor, insert_jobs, job, wait_until
from tests.executor.lab_handlers import SCRIPTED_TYPE

MIGRATION = ROOT / "supabase" / "migrations" / "0002_executor.sql"


def test_check_passes_on_a_migrated_backend(clean_backend, executors):
    ex = executors("check-ok", "--check")
    assert ex.wait() == 0, ex.output
    assert "schema version 2" in ex.output


def test_check_names_the_migration_to_apply(clean_backend, executors):
    clean_backend.sql("DROP FUNCTION public.executor_schema_version()")
    try:
        ex = executors("check-missing", "--check")
        assert ex.wait() == 2, ex.output
        assert "FAIL" in ex.output and "supabase/migrations/0002_executor.sql" in ex.output
    finally:
        clean_backend.sql(MIGRATION.read_text())  # idempotent: re-applying restores it


def test_check_reports_a_wrong_key_and_an_unreachable_backend(clean_backend, executors):
    ex = executors("check-key", "--check", SUPABASE_SERVICE_ROLE_KEY=clean_backend.anon_key)
    assert ex.wait() == 3, ex.output
    assert "FAIL  service-role key" in ex.output and clean_backend.anon_key not in ex.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = executors("check-down", "--check", SUPABASE_URL=f"http://127.0.0.1:{port}")
    assert ex.wait() == 4, ex.output
    assert "FAIL  backend reachable" in ex.output


def test_missing_configuration_is_one_clear_error(clean_backend, tmp_path: Path):
    ex = Executor(
        clean_backend, "no-config", tmp_path, "--check", SUPABASE_URL="", SUPABASE_SERVICE_ROLE_KEY=""
    )
    assert ex.wait() == 2
    assert "SUPABASE_URL" in ex.output and "SUPABASE_SERVICE_ROLE_KEY" in ex.output


def test_once_against_a_dead_backend_exits_with_the_connectivity_code(clean_backend, executors):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ex = executors("once-down", "--once", SUPABASE_URL=f"http://127.0.0.1:{port}")
    assert ex.wait(timeout=60) == 4, ex.output
    assert "hint:" in ex.output


def test_leases_are_renewed_so_a_live_long_job_is_never_rescued(clean_backend, executors):
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 10})[0]
    worker = executors("renewer", EXECUTOR_LEASE_SECONDS="3")
    wait_until(lambda: job(clean_backend, jid)["status"] == "running", what="running")
    watcher = executors("watcher", EXECUTOR_LEASE_SECONDS="3")  # would fail it if the lease lapsed
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["status"] in ("completed", "failed") and r,
        timeout=90,
        what="end",
    )
    assert row["status"] == "completed", row["details"].get("error")
    for ex in (worker, watcher):
        ex.terminate()
        assert ex.wait(timeout=60) == 0
