"""JobWriter units without a backend: which refused step-row writes are dropped, which are kept."""

from __future__ import annotations

from typing import Any

import pytest

from lib.dsm.rest import PostgrestError
from lib.errors import AuthError
from lib.executor.store import Claim
from lib.executor.writer import JobWriter


class StepStore:
    """Only what _flush_steps uses; upsert_steps raises `error` until it is cleared."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.sent: list[list[dict[str, Any]]] = []

    def last_step_number(self, job_id: str) -> int:
        return 0

    def upsert_steps(self, claim: Claim, rows: Any, *, allow_cancelled: bool = False) -> bool:
        if self.error is not None:
            raise self.error
        self.sent.append(list(rows))
        return True


def refused(status: int) -> PostgrestError:
    return PostgrestError("refused", status=status, pg_code=None, remote_message="no")


def writer_with_one_step(store: StepStore) -> JobWriter:
    w = JobWriter(store, Claim("job-1", "token-1"))  # type: ignore[arg-type]
    w.step_row({"id": "s1", "step_number": 1, "step_name": "one", "step_status": "running"})
    return w


@pytest.mark.parametrize("status", [400, 404, 409])
def test_step_rows_the_backend_rejects_for_good_are_dropped(status):
    store = StepStore(refused(status))
    w = writer_with_one_step(store)
    assert w.flush()
    assert not w.pending  # dropped: can never keep the job from finishing


@pytest.mark.parametrize(
    "error",
    [
        refused(401),
        refused(403),
        refused(429),
        AuthError("backend refused the key"),
    ],
    ids=["401", "403", "429", "auth"],
)
def test_step_rows_refused_for_a_passing_reason_are_kept_and_re_sent(error):
    store = StepStore(error)
    w = writer_with_one_step(store)
    assert not w.flush()
    assert w.pending
    store.error = None
    assert w.flush()
    assert [r["step_name"] for r in store.sent[0]] == ["one"] and not w.pending


def test_step_numbers_follow_start_times_when_two_threads_enter_steps_at_once(monkeypatch):
    """The first thread to take a step number is slow to read the clock: without the number and
    the time taken together, the second thread's step would start 'earlier' with a higher number."""
    import threading
    from types import SimpleNamespace

    from lib.executor import context as context_mod
    from lib.executor.models import Phase

    rows: list[dict[str, Any]] = []
    second_read = threading.Event()
    calls: list[int] = []
    clock_lock = threading.Lock()

    def slow_first_clock() -> str:
        with clock_lock:
            calls.append(1)
            n = len(calls)
        if n == 1:
            second_read.wait(2)  # the other thread reads the clock meanwhile, if it can
        else:
            second_read.set()
        with clock_lock:
            tick = len([c for c in calls if c == 2]) + 1
            calls.append(2)
        return f"2026-01-01T00:00:{tick:02d}+00:00"

    monkeypatch.setattr(context_mod, "_now_iso", slow_first_clock)
    ctx = context_mod.JobContextImpl.__new__(context_mod.JobContextImpl)
    ctx._lock = threading.Lock()
    ctx._step_count = 0
    ctx._steps = threading.local()
    ctx.job = SimpleNamespace(job_type="x")
    ctx.executor_id = "ex"
    ctx.phase = Phase.EXECUTE
    ctx.writer = SimpleNamespace(step_row=rows.append)

    first = threading.Thread(target=ctx._step_started, args=("a", True))
    first.start()
    while not calls:  # the first thread holds its number and is in the clock
        threading.Event().wait(0.01)
    second = threading.Thread(target=ctx._step_started, args=("b", True))
    second.start()
    first.join(30)
    second.join(30)
    ordered = sorted(rows, key=lambda r: r["step_number"])
    starts = [r["step_started_at"] for r in ordered]
    assert starts == sorted(starts), ordered
