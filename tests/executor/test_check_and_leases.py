"""--check (configuration, backend, key, migrations, handlers; exit codes), --help, --once against a
dead backend or a database without the migration, live leases."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.executor.helpers import ROOT, Executor, insert_jobs, job, wait_until
from tests.executor.lab_handlers import SCRIPTED_TYPE

MIGRATION = ROOT / "supabase" / "migrations" / "0002_executor.sql"


def test_check_passes_on_a_migrated_backend(clean_backend, executors):
    ex = executors("check-ok", "--check")
    assert ex.wait() == 0, ex.output
    assert "schema version 4" in ex.output
    assert "FAIL" not in ex.output
    assert "retry" not in ex.output.lower(), "no HTTP retry noise in the checklist"


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
    fails = [line for line in ex.output.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith("FAIL  backend TCP"), ex.output  # reported once


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


def test_check_fails_on_unknown_job_types_and_on_no_types_served(clean_backend, executors):
    ex = executors("check-types", "--check", EXECUTOR_JOB_TYPES="no_such_type")
    assert ex.wait() == 2, ex.output
    assert "FAIL  job types served" in ex.output and "FAIL  EXECUTOR_JOB_TYPES" in ex.output
    assert "no_such_type" in ex.output


def test_a_bad_extra_handlers_value_is_a_config_error_naming_it(clean_backend, executors):
    for mode in ("--check", "--once"):
        ex = executors("bad-extra", mode, EXECUTOR_EXTRA_HANDLERS="tests.no_such_module:HANDLERS")
        assert ex.wait() == 2, ex.output
        assert "EXECUTOR_EXTRA_HANDLERS" in ex.output and "no_such_module" in ex.output
        assert "Traceback" not in ex.output


def test_help_prints_the_exit_code_table_once(clean_backend, executors):
    ex = executors("help", "--help")
    assert ex.wait() == 0
    assert ex.output.count("exit codes:") == 1, ex.output


def test_once_without_the_migration_exits_2_naming_the_file(clean_backend, executors):
    clean_backend.sql("DROP FUNCTION public.executor_claim_jobs(text, text[], integer, integer)")
    try:
        insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "ok"})
        ex = executors("once-nomig", "--once")
        assert ex.wait(timeout=120) == 2, ex.output
        assert "supabase/migrations/0002_executor.sql" in ex.output
    finally:
        clean_backend.sql(MIGRATION.read_text())


def test_a_lease_below_the_minimum_is_refused(clean_backend, executors):
    ex = executors("short-lease", "--check", EXECUTOR_LEASE_SECONDS="3")
    assert ex.wait() == 2, ex.output
    assert "EXECUTOR_LEASE_SECONDS" in ex.output


def test_leases_are_renewed_so_a_live_long_job_is_never_rescued(clean_backend, executors):
    """A job running longer than two leases (15 s, the minimum) while another executor watches for
    expired leases: the lease moves forward and the job completes."""
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 35})[0]
    worker = executors("renewer", EXECUTOR_LEASE_SECONDS="15")
    first = wait_until(
        lambda: (r := job(clean_backend, jid))["status"] == "running" and r["lease_expires_at"],
        what="running",
    )
    watcher = executors("watcher", EXECUTOR_LEASE_SECONDS="15")  # would fail it if the lease lapsed
    # the lease is really renewed (moves past the first expiry), not merely long
    wait_until(
        lambda: (job(clean_backend, jid)["lease_expires_at"] or first) > first, timeout=120, what="renewal"
    )
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["status"] in ("completed", "failed") and r,
        timeout=180,
        what="end",
    )
    assert row["status"] == "completed", row["details"].get("error")
    for ex in (worker, watcher):
        ex.terminate()
        assert ex.wait(timeout=90) == 0
