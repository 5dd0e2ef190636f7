"""workflow_executions step rows: one per ctx.step of a job, written by the runner through a real
executor process (running at entry, completed/failed at exit), guarded by the claim token."""

from __future__ import annotations

import uuid

import pytest

from lib.dsm.rest import RestClient
from lib.errors import ConnectivityError
from lib.executor.store import Claim, JobStore
from lib.executor.writer import JobWriter
from tests.executor.helpers import insert_jobs, job, wait_until
from tests.executor.lab_handlers import LIGHT_TYPE, SCRIPTED_TYPE, STEPS_TYPE

RUNNER_STEPS = ["validate input", "preflight", "execute"]


def _steps(backend, job_id: str) -> list[dict]:
    return backend.sql("SELECT * FROM workflow_executions WHERE job_id = %s ORDER BY step_number", (job_id,))


def _assert_times(rows: list[dict]) -> None:
    for r in rows:
        assert r["step_started_at"] is not None, r
        if r["step_status"] != "running":
            assert r["step_completed_at"] is not None and r["step_completed_at"] >= r["step_started_at"], r
    starts = [r["step_started_at"] for r in rows]
    assert starts == sorted(starts), "step numbers follow the order the steps started in"


def test_three_steps_one_failing_give_numbered_rows_with_status_times_and_error(clean_backend, executors):
    secret_url = "https://root:Sup3rSecret@10.9.9.9/redfish/v1"
    swallowed = insert_jobs(
        clean_backend,
        STEPS_TYPE,
        details={"fail": "probe", "swallow": True, "message": f"probe refused by {secret_url}"},
    )[0]
    fatal = insert_jobs(
        clean_backend, STEPS_TYPE, details={"fail": "apply", "message": "apply exploded"}, created_offset_s=1
    )[0]
    ex = executors("steps", "--once", EXECUTOR_MAX_CONCURRENT_JOBS="1")
    assert ex.wait() == 0, ex.output[-3000:]

    # The failure is caught by the handler: the job completes, the probe row stays failed.
    assert job(clean_backend, swallowed)["status"] == "completed"
    rows = _steps(clean_backend, swallowed)
    assert [r["step_number"] for r in rows] == list(range(1, 8)), ex.output[-3000:]
    assert [r["step_name"] for r in rows] == [*RUNNER_STEPS, "prepare", "probe", "apply", "postcheck"]
    assert [r["step_status"] for r in rows] == [
        "completed",
        "completed",
        "completed",
        "completed",
        "failed",
        "completed",
        "completed",
    ]
    assert {r["workflow_type"] for r in rows} == {STEPS_TYPE}
    probe = rows[4]
    assert probe["step_error"].startswith("RuntimeError: probe refused by https://")
    assert "Sup3rSecret" not in probe["step_error"], "step_error is redacted"
    assert all(r["step_error"] is None for r in rows if r["step_name"] != "probe")
    assert rows[0]["step_details"]["phase"] == "preflight" and rows[3]["step_details"]["phase"] == "execute"
    _assert_times(rows)
    # every step is inside its parent: execute (3) spans prepare..apply
    assert rows[2]["step_started_at"] <= rows[3]["step_started_at"]
    assert rows[2]["step_completed_at"] >= rows[5]["step_completed_at"]

    # The failure propagates: the step and its parent (execute) fail, postcheck never runs.
    row = job(clean_backend, fatal)
    assert row["status"] == "failed" and row["details"]["failed_step"] == "apply"
    rows = _steps(clean_backend, fatal)
    assert [(r["step_number"], r["step_name"], r["step_status"]) for r in rows] == [
        (1, "validate input", "completed"),
        (2, "preflight", "completed"),
        (3, "execute", "failed"),
        (4, "prepare", "completed"),
        (5, "probe", "completed"),
        (6, "apply", "failed"),
    ]
    assert rows[5]["step_error"] == "RuntimeError: apply exploded"
    assert rows[2]["step_error"] == "RuntimeError: apply exploded"
    _assert_times(rows)


def test_cancelled_job_ends_its_running_steps_as_failed_with_the_reason(clean_backend, executors):
    """Choice: a step the cancel interrupted is `failed` (it started and did not finish), with
    step_error "cancelled during this step" and step_details.interrupted = "cancelled"."""
    jid = insert_jobs(clean_backend, SCRIPTED_TYPE, details={"mode": "sleep", "seconds": 600})[0]
    ex = executors("steps-cancel")
    wait_until(
        lambda: any(
            r["step_name"] == "long wait" and r["step_status"] == "running"
            for r in _steps(clean_backend, jid)
        ),
        what="the long wait step row, running",
    )
    clean_backend.sql("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (jid,))
    wait_until(lambda: job(clean_backend, jid)["completed_at"] is not None, what="cancel recorded")
    assert job(clean_backend, jid)["status"] == "cancelled"
    rows = _steps(clean_backend, jid)
    assert [(r["step_name"], r["step_status"]) for r in rows] == [
        ("validate input", "completed"),
        ("preflight", "completed"),
        ("execute", "failed"),
        ("long wait", "failed"),
    ]
    for r in rows[2:]:
        assert r["step_error"] == "cancelled during this step"
        assert r["step_details"]["interrupted"] == "cancelled"
        assert r["step_completed_at"] is not None
    ex.terminate()
    assert ex.wait(timeout=60) == 0


@pytest.fixture
def store(clean_backend):
    rest = RestClient(clean_backend.url, clean_backend.service_role_key)
    yield JobStore(rest, "steps-store", lease_seconds=30)
    rest.close()


def _row(number: int, status: str, row_id: str, **extra) -> dict:
    return {
        "id": row_id,
        "workflow_type": LIGHT_TYPE,
        "step_number": number,
        "step_name": f"s{number}",
        "step_status": status,
        "step_started_at": "2026-01-01T00:00:00+00:00",
        **extra,
    }


def test_step_writes_are_idempotent_ordered_and_guarded(clean_backend, store):
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    [claimed] = store.claim([LIGHT_TYPE], 1)
    claim = Claim(claimed["id"], claimed["claim_token"])
    a = str(uuid.uuid4())
    start = _row(1, "running", a)
    end = {**start, "step_status": "completed", "step_completed_at": "2026-01-01T00:00:05+00:00"}
    assert store.upsert_steps(claim, [start, end])
    assert store.upsert_steps(claim, [start, end])  # re-sent after a timeout: applied once
    assert store.upsert_steps(claim, [start])  # an old write never undoes a newer one
    [row] = _steps(clean_backend, jid)
    assert row["step_status"] == "completed" and row["step_completed_at"] is not None
    assert store.last_step_number(jid) == 1

    # Not ours any more (another claim token): nothing written, and False says so.
    other = Claim(jid, str(uuid.uuid4()))
    assert not store.upsert_steps(other, [_row(2, "running", str(uuid.uuid4()))])
    # Cancelled by the UI: only the owner closing its steps (allow_cancelled) may still write.
    clean_backend.sql("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (jid,))
    b = str(uuid.uuid4())
    assert not store.upsert_steps(claim, [_row(2, "running", b)])
    assert store.upsert_steps(
        claim, [_row(2, "failed", b, step_error="cancelled during this step")], allow_cancelled=True
    )
    assert [r["step_status"] for r in _steps(clean_backend, jid)] == ["completed", "failed"]


class _FlakyStore:
    """A JobStore stand-in for the writer alone: the first step write times out after committing."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []
        self.stored: dict[str, dict] = {}
        self.fail_next = True

    def last_step_number(self, job_id: str) -> int:
        return 4  # an earlier run of this job (paused, re-queued) used steps 1..4

    def upsert_steps(self, claim, rows, *, allow_cancelled=False) -> bool:
        self.calls.append([dict(r) for r in rows])
        for r in rows:
            self.stored[r["id"]] = dict(r)
        if self.fail_next:
            self.fail_next = False
            raise ConnectivityError("read timed out")
        return True


def test_writer_keeps_step_rows_through_a_hiccup_and_numbers_after_earlier_runs():
    fake = _FlakyStore()
    w = JobWriter(fake, Claim("j1", "t1"))  # type: ignore[arg-type]
    w.step_row(_row(1, "running", "a"))
    w.step_row({**_row(1, "completed", "a"), "step_completed_at": "2026-01-01T00:00:01+00:00"})
    assert not w.flush() and w.pending, "kept after the failed write"
    w.step_row(_row(2, "running", "b"))
    assert w.flush() and not w.pending
    # the same two writes re-sent first (same ids, same numbers), then the new one, in order
    assert [(r["id"], r["step_status"]) for r in fake.calls[1]] == [
        ("a", "running"),
        ("a", "completed"),
        ("b", "running"),
    ]
    assert [r["step_number"] for r in fake.calls[1]] == [5, 5, 6]
    assert fake.calls[0] == fake.calls[1][:2]


def test_a_dead_executors_running_step_is_failed_with_the_stale_reason(clean_backend, store):
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    [claimed] = store.claim([LIGHT_TYPE], 1)
    claim = Claim(claimed["id"], claimed["claim_token"])
    done, open_ = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.upsert_steps(claim, [_row(1, "completed", done), _row(2, "running", open_)])
    clean_backend.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = %s", (jid,))
    assert [str(r["job_id"]) for r in store.fail_stale(own_only=False)] == [jid]
    rows = _steps(clean_backend, jid)
    assert [r["step_status"] for r in rows] == ["completed", "failed"]
    assert "stopped responding" in rows[1]["step_error"] and rows[1]["step_completed_at"] is not None
    assert rows[0]["step_error"] is None


def test_a_step_still_open_when_the_job_fails_is_closed_with_the_error(clean_backend, store):
    """A handler thread stuck in a blocking call cannot close its step; the job's end does."""
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    [claimed] = store.claim([LIGHT_TYPE], 1)
    claim = Claim(claimed["id"], claimed["claim_token"])
    assert store.upsert_steps(claim, [_row(1, "running", str(uuid.uuid4()))])
    assert store.finish_job(claim, "failed", {"error": "executor x shut down during step s1"}, []) == "failed"
    [row] = _steps(clean_backend, jid)
    assert row["step_status"] == "failed" and row["step_error"] == "executor x shut down during step s1"


def _claimed(clean_backend, store) -> tuple[str, Claim]:
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    [claimed] = store.claim([LIGHT_TYPE], 1)
    return jid, Claim(claimed["id"], claimed["claim_token"])


def test_no_step_row_goes_into_a_cancelled_job_that_has_ended(clean_backend, store):
    jid, claim = _claimed(clean_backend, store)
    clean_backend.sql("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (jid,))
    assert store.finish_job(claim, "cancelled", {"cancelled_step": "s1"}, [], seq=1) == "cancelled"
    assert not store.upsert_steps(claim, [_row(1, "running", str(uuid.uuid4()))], allow_cancelled=True)
    assert _steps(clean_backend, jid) == []


def test_a_re_sent_finish_closes_a_step_left_open(clean_backend, store):
    jid, claim = _claimed(clean_backend, store)
    assert store.finish_job(claim, "failed", {"error": "boom"}, [], seq=1) == "failed"
    # a row that slipped in after the end (e.g. written by an older agent): the re-send closes it
    clean_backend.sql(
        "INSERT INTO workflow_executions (id, job_id, workflow_type, step_number, step_name, step_status,"
        " step_started_at) VALUES (%s, %s, %s, 1, 's1', 'running', now())",
        (str(uuid.uuid4()), jid, LIGHT_TYPE),
    )
    assert store.finish_job(claim, "failed", {"error": "boom"}, [], seq=1) == "failed"
    [row] = _steps(clean_backend, jid)
    assert row["step_status"] == "failed" and row["step_error"] == "boom"


def test_a_completed_job_leaves_no_step_open(clean_backend, store):
    jid, claim = _claimed(clean_backend, store)
    assert store.upsert_steps(claim, [_row(1, "running", str(uuid.uuid4()))])
    assert store.finish_job(claim, "completed", {}, []) == "completed"
    [row] = _steps(clean_backend, jid)
    assert row["step_status"] == "failed" and row["step_error"] == "step end not recorded"
    assert row["step_completed_at"] is not None


def test_releasing_a_paused_job_closes_its_open_steps(clean_backend, store):
    jid, claim = _claimed(clean_backend, store)
    done, open_ = str(uuid.uuid4()), str(uuid.uuid4())
    assert store.upsert_steps(claim, [_row(1, "completed", done), _row(2, "running", open_)])
    clean_backend.sql("UPDATE jobs SET status = 'paused' WHERE id = %s", (jid,))
    assert store.release_paused(claim, {"paused_step": "s2"}, []) == "paused"
    rows = _steps(clean_backend, jid)
    assert [r["step_status"] for r in rows] == ["completed", "failed"]
    assert rows[1]["step_error"] == "job paused during this step" and rows[1]["step_completed_at"] is not None
    assert job(clean_backend, jid)["status"] == "paused"


@pytest.mark.parametrize("status", ["cancelled", "paused"])
def test_a_cancelled_job_keeps_its_lease_while_cleaning_up_and_a_dead_cleanup_closes_its_steps(
    clean_backend, store, status
):
    jid, claim = _claimed(clean_backend, store)
    assert store.upsert_steps(claim, [_row(1, "running", str(uuid.uuid4()))])
    clean_backend.sql(
        "UPDATE jobs SET status = %s, lease_expires_at = now() + interval '2 seconds' WHERE id = %s",
        (status, jid),
    )
    # the owner is alive and cleaning up: its renewals keep the lease, the rescue leaves it alone
    store.renew([claim])
    [row] = clean_backend.sql(
        "SELECT lease_expires_at > now() + interval '10 seconds' AS long FROM jobs WHERE id = %s", (jid,)
    )
    assert row["long"], "a cancelled job being cleaned up keeps its lease"
    assert store.fail_stale(own_only=False) == []
    assert _steps(clean_backend, jid)[0]["step_status"] == "running"
    # the owner died: the lease lapses, the open step ends failed, the job keeps its status
    clean_backend.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = %s", (jid,))
    assert store.fail_stale(own_only=False) == [], "a cancelled job is not failed"
    [step] = _steps(clean_backend, jid)
    assert step["step_status"] == "failed" and "stopped responding" in step["step_error"]
    assert status in step["step_error"] and job(clean_backend, jid)["status"] == status
