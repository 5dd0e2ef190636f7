"""A job's life through a real executor process: failure, invalid input, cancel, SIGTERM, SIGKILL, outage."""

from __future__ import annotations

import signal

from tests.executor.helpers import insert_jobs, job, runs_per_job, wait_until
from tests.executor.lab_handlers import LIGHT_TYPE, SCRIPTED_TYPE, TARGETS_TYPE


def _running_in(backend, job_id: str, step: str):
    def pred():
        row = job(backend, job_id)
        return row["status"] == "running" and (row["details"] or {}).get("current_step") == step and row

    return pred


def test_handler_exception_fails_the_job_with_step_and_logs_and_executor_goes_on(clean_backend, executors):
    bad = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "fail", "message": "disk on fire"})[0]
    after = insert_jobs(clean_backend, LIGHT_TYPE, created_offset_s=1)[0]
    ex = executors("exc", "--once", EXECUTOR_MAX_CONCURRENT_JOBS="1")
    assert ex.wait() == 0, ex.output[-3000:]
    row = job(clean_backend, bad)
    d = row["details"]
    assert row["status"] == "failed" and row["completed_at"] is not None
    assert d["error"] == "RuntimeError: disk on fire"
    assert d["failed_step"] == "doomed step" and d["phase"] == "execute"
    assert any("cleanup ran" in line for line in d["console_log"])
    assert any("failed in step doomed step" in line for line in d["console_log"])
    assert job(clean_backend, after)["status"] == "completed"


def test_invalid_input_fails_in_preflight_naming_the_field(clean_backend, executors):
    bad_seconds = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": "soon"})[0]
    bad_mode = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "explode"})[0]
    bad_scope = insert_jobs(clean_backend, TARGETS_TYPE, target_scope={"ip_range": "10.0.0.300/99"})[0]
    empty_scope = insert_jobs(clean_backend, TARGETS_TYPE, target_scope={"server_ids": []})[0]
    ex = executors("invalid", "--once")
    assert ex.wait() == 0, ex.output[-3000:]
    for job_id, field in (
        (bad_seconds, "details.seconds"),
        (bad_mode, "details.mode"),
        (bad_scope, "target_scope.ip_range"),
        (empty_scope, "target_scope"),
    ):
        row = job(clean_backend, job_id)
        assert row["status"] == "failed", job_id
        assert field in row["details"]["error"], row["details"]["error"]
        if field.startswith("details"):
            assert row["details"]["phase"] == "preflight"
            assert row["details"]["invalid_field"] == field
    assert runs_per_job(clean_backend).get(bad_seconds) is None  # execute never ran


def test_cancel_mid_wait_wakes_runs_cleanup_and_stays_cancelled(clean_backend, executors):
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    ex = executors("cancel")
    wait_until(_running_in(clean_backend, jid, "long wait"), what="job in its long wait")
    clean_backend.sql("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (jid,))
    # the handler wakes from its 600 s sleep, cleanup runs and is recorded in the cancelled job
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["completed_at"] is not None and r,
        timeout=60,
        what="cancel recorded",
    )
    assert row["status"] == "cancelled"
    assert row["details"]["cancelled_step"] == "long wait"
    assert any("cleanup ran" in line for line in row["details"]["console_log"])
    # the executor keeps serving other jobs afterwards
    nxt = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    wait_until(lambda: job(clean_backend, nxt)["status"] == "completed", what="next job")
    assert job(clean_backend, jid)["status"] == "cancelled"
    ex.terminate()
    assert ex.wait(timeout=60) == 0


def test_sigterm_drains_short_jobs_and_fails_long_ones_with_the_step(clean_backend, executors):
    short = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 2})[0]
    long_ = insert_jobs(
        clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600, "retry_safe": False}
    )[0]
    ex = executors("drain", EXECUTOR_DRAIN_SECONDS="4")
    wait_until(_running_in(clean_backend, long_, "long wait"), what="long job running")
    wait_until(_running_in(clean_backend, short, "long wait"), what="short job running")
    ex.proc.send_signal(signal.SIGTERM)
    # the executor has left its poll loop (no claim in flight any more): a job arriving now must stay
    wait_until(lambda: "stopped claiming new jobs" in ex.output, timeout=60, what="draining")
    late = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    assert ex.wait(timeout=90) == 0, ex.output[-3000:]
    assert job(clean_backend, short)["status"] == "completed"
    row = job(clean_backend, long_)
    assert row["status"] == "failed"
    assert row["details"]["error"].startswith("executor drain shut down during step long wait")
    assert "NOT safe to retry" in row["details"]["error"]
    assert row["details"]["failed_step"] == "long wait" and row["details"]["retry_safe"] is False
    assert any("cleanup ran" in line for line in row["details"]["console_log"])
    assert job(clean_backend, late)["status"] == "pending"


def test_sigkill_then_rescue_by_another_executor_never_reruns(clean_backend, executors):
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    victim = executors("victim", EXECUTOR_LEASE_SECONDS="15")
    wait_until(_running_in(clean_backend, jid, "long wait"), what="job running")
    victim.kill()
    assert job(clean_backend, jid)["status"] == "running"
    rescuer = executors("rescuer", EXECUTOR_LEASE_SECONDS="15")
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["status"] == "failed" and r,
        timeout=120,
        what="stale job failed",
    )
    d = row["details"]
    assert d["error"] == "executor victim stopped responding during step long wait"
    assert d["failed_step"] == "long wait" and d["failed_by"] == "rescuer"
    assert any("step: long wait" in line for line in d["console_log"]), "logs kept"
    assert runs_per_job(clean_backend)[jid] == 1, "never run again"
    rescuer.terminate()
    assert rescuer.wait(timeout=60) == 0


def test_startup_fails_only_own_jobs_whose_lease_expired(clean_backend, executors):
    mine = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    first = executors("restarter", EXECUTOR_LEASE_SECONDS="600")
    wait_until(_running_in(clean_backend, mine, "long wait"), what="own job running")
    first.kill()
    other = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    neighbour = executors("neighbour", EXECUTOR_LEASE_SECONDS="600")
    wait_until(_running_in(clean_backend, other, "long wait"), what="neighbour's job running")
    # the dead process's lease (600 s) has not expired: a restart must not assume the job is dead
    before = _beat(clean_backend, "restarter")["startup_time"]
    again = executors("restarter", EXECUTOR_LEASE_SECONDS="600")
    wait_until(
        lambda: (b := _beat(clean_backend, "restarter"))["startup_time"] != before and b["poll_count"] >= 3,
        what="restarted executor polling",
    )
    assert job(clean_backend, mine)["status"] == "running", "a live lease is never failed at start-up"
    # once its lease has expired, it is failed (by the restarted executor or the neighbour's rescue)
    clean_backend.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (mine,))
    row = wait_until(
        lambda: (r := job(clean_backend, mine))["status"] == "failed" and r, what="own stale failed"
    )
    assert "long wait" in row["details"]["error"]
    assert job(clean_backend, other)["status"] == "running", "another executor's running job is untouched"
    for ex in (again, neighbour):
        ex.proc.send_signal(signal.SIGINT)
        wait_until(
            lambda ex=ex: "SIGINT received" in ex.output, what=f"first signal handled by {ex.executor_id}"
        )
        ex.proc.send_signal(signal.SIGINT)  # a second signal: stop now, without the drain
        assert ex.wait(timeout=90) == 0, ex.output[-2000:]


def test_a_once_run_sharing_the_daemons_id_leaves_its_jobs_alone_and_warns(clean_backend, executors):
    """The default id is executor-<hostname>: a daemon and a hand-run --once on one host share it."""
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    daemon = executors("shared-id", EXECUTOR_LEASE_SECONDS="60")
    wait_until(_running_in(clean_backend, jid, "long wait"), what="daemon's job running")
    wait_until(
        lambda: clean_backend.sql("SELECT 1 FROM executor_heartbeats WHERE executor_id = 'shared-id'"),
        what="daemon heartbeat",
    )
    light = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    once = executors("shared-id", "--once")
    assert once.wait(timeout=120) == 0, once.output[-3000:]
    assert job(clean_backend, light)["status"] == "completed"
    assert job(clean_backend, jid)["status"] == "running", "the --once run failed the daemon's live job"
    assert "ANOTHER LIVE PROCESS uses EXECUTOR_ID shared-id" in once.output, once.output[-3000:]
    daemon.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "SIGINT received" in daemon.output, what="first signal handled")
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait(timeout=90) == 0


def test_pause_stops_like_a_cancel_releases_the_claim_and_stays_paused(clean_backend, executors):
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    ex = executors("pauser")
    wait_until(_running_in(clean_backend, jid, "long wait"), what="job in its long wait")
    clean_backend.sql("UPDATE jobs SET status = 'paused' WHERE id = %s", (jid,))
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["claim_token"] is None and r, timeout=60, what="claim released"
    )
    assert row["status"] == "paused" and row["completed_at"] is None
    assert row["details"]["paused_step"] == "long wait"
    assert any("cleanup ran" in line for line in row["details"]["console_log"])
    assert "pauser" in ex.output and "paused by the UI" in ex.output
    # set back to pending, it runs again (from the start) and is not treated as lost
    clean_backend.sql(
        "UPDATE jobs SET status = 'pending', details = details || '{\"mode\": \"ok\"}' WHERE id = %s", (jid,)
    )
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["status"] == "completed" and r, timeout=60, what="re-run"
    )
    assert runs_per_job(clean_backend)[jid] == 2
    ex.terminate()
    assert ex.wait(timeout=90) == 0


def test_backend_outage_mid_job_keeps_running_and_loses_no_log_line(clean_backend, executors):
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "tick", "seconds": 30})[0]
    ex = executors("outage", EXECUTOR_LEASE_SECONDS="60")
    wait_until(_running_in(clean_backend, jid, "ticking"), what="job ticking")
    # ticks already in the database before the outage
    wait_until(lambda: _ticks(job(clean_backend, jid)), what="first ticks flushed")
    clean_backend.stop()
    # the executor noticed the outage: a flush was deferred (writes buffered, not lost)
    wait_until(lambda: "flush deferred" in ex.output, timeout=60, what="a deferred write")
    clean_backend.start()
    row = wait_until(
        lambda: (r := job(clean_backend, jid))["status"] == "completed" and r,
        timeout=120,
        what="job completed",
    )
    assert "deferred writes flushed" in ex.output or "cannot record the end yet" in ex.output
    ticks = _ticks(row)
    assert ticks == [f"tick {i}" for i in range(150)], f"{len(ticks)} of 150 tick lines, in order, once each"
    assert ex.proc.poll() is None, "executor survived the outage"
    nxt = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    wait_until(lambda: job(clean_backend, nxt)["status"] == "completed", what="next job after the outage")
    ex.terminate()
    assert ex.wait(timeout=60) == 0


def _ticks(row) -> list[str]:
    return [
        line.split("] ", 2)[-1] for line in (row["details"] or {}).get("console_log", []) if "] tick " in line
    ]


def _beat(backend, executor_id: str) -> dict:
    rows = backend.sql("SELECT * FROM executor_heartbeats WHERE executor_id = %s", (executor_id,))
    return rows[0] if rows else {"startup_time": None, "poll_count": 0}
