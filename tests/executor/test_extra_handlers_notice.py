"""EXECUTOR_EXTRA_HANDLERS imports code named in the environment: when set, the executor says so
once at start (a WARNING naming the variable and the modules it loaded) and --check shows a WARN
line that is not a failure."""

from __future__ import annotations

from tests.executor.helpers import EXTRA, insert_jobs, job
from tests.executor.lab_handlers import LIGHT_TYPE


def test_check_shows_the_hook_as_a_warn_line_not_a_failure(clean_backend, executors):
    ex = executors("extra-check", "--check")
    assert ex.wait() == 0, ex.output
    [line] = [ln for ln in ex.output.splitlines() if ln.startswith("WARN  EXECUTOR_EXTRA_HANDLERS")]
    assert EXTRA in line and "tests.executor.lab_handlers (" in line and "lab_handlers.py" in line
    assert LIGHT_TYPE in line
    assert "FAIL" not in ex.output


def test_once_logs_one_warning_naming_the_variable_and_modules(clean_backend, executors):
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    ex = executors("extra-once", "--once")
    assert ex.wait() == 0, ex.output[-3000:]
    assert job(clean_backend, jid)["status"] == "completed"
    warnings = [ln for ln in ex.output.splitlines() if "WARNING" in ln and "EXECUTOR_EXTRA_HANDLERS" in ln]
    assert len(warnings) == 1, ex.output[-3000:]
    assert EXTRA in warnings[0] and "loaded modules tests.executor.lab_handlers" in warnings[0]


def test_unset_hook_says_nothing(clean_backend, executors):
    ex = executors("extra-unset", "--check", EXECUTOR_EXTRA_HANDLERS="")
    ex.wait()
    assert "EXECUTOR_EXTRA_HANDLERS" not in ex.output
