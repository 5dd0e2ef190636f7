"""The one-command demo (`python -m lab.demo`) as a user runs it: a subprocess, its stdout summary,
and what it leaves behind (no process of its process group, no database, no work directory)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from lab.backend.launcher import _with_dbname, server_url

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


class Demo:
    """`python -m lab.demo` in its own process group (as a shell starts it), stderr read as it comes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab.demo"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.stderr_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def wait_for_stderr(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.stderr_lines)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"demo never printed {pattern!r}:\n{''.join(self.stderr_lines)}")

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        # not communicate(): it would read stderr too, racing the reader thread (the summary is small)
        self.proc.wait(timeout=timeout)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self._reader.join(timeout=10)
        return self.proc.returncode, out, "".join(self.stderr_lines)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _group_members(pgid: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{entry.name}: {cmd}")
    return found


def _database_exists(name: str) -> bool:
    base = server_url()
    with psycopg.connect(_with_dbname(base, "postgres") if base else "dbname=postgres") as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def assert_nothing_left(demo: Demo, stderr: str) -> None:
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", stderr)]
    assert pids, stderr  # the demo names every process it starts
    time.sleep(0.5)  # let init reap what the demo stopped
    assert [p for p in pids if _alive(p)] == []
    assert _group_members(demo.proc.pid) == []
    databases = set(re.findall(r"database (dsm_demo_\w+)", stderr))
    assert databases, stderr
    assert [d for d in databases if _database_exists(d)] == []
    workdirs = re.findall(r"work directory (\S+)", stderr)
    assert workdirs and not any(Path(w).exists() for w in workdirs)


def test_demo_syncs_runs_jobs_prints_summary_and_leaves_nothing_behind() -> None:
    demo = Demo()
    code, out, err = demo.finish()
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"

    synced = re.search(r"^servers synced: (\d+) \((\d+) with a simulated iDRAC\)$", out, re.M)
    assert synced and int(synced.group(1)) > 0 and int(synced.group(2)) > 0, out
    linked = re.search(r"^hosts linked: (\d+) of (\d+) ESXi hosts$", out, re.M)
    assert linked and 0 < int(linked.group(1)) <= int(linked.group(2)), out
    assert re.search(r"^OpenManage sync: .*\(exit 0, ", out, re.M), out
    assert re.search(r"^vCenter sync: .*\(exit 0, ", out, re.M), out

    jobs = re.findall(r"^  (ok  |FAIL) (\w+)\s+(\w+)\b.*\n\s+log: (.*)$", out, re.M)
    types = {job_type for _, _, job_type, _ in jobs}
    assert {"power_action", "health_check", "test_credentials"} <= types, out
    for mark, status, job_type, last_log in jobs:
        assert mark == "ok  ", f"{job_type} ended {status}:\n{out}"
        assert status in ("completed", "failed"), out
        assert re.match(r"\[\d\d:\d\d:\d\d\] \[\w+\] ", last_log), last_log
    # the one job meant to fail (a stale password) failed with the reason in its log
    failed = [j for j in jobs if j[1] == "failed"]
    assert len(failed) == 1 and "password" in failed[0][3].lower(), out
    assert re.search(rf"^jobs: {len(jobs)} of {len(jobs)} finished, all as expected$", out, re.M), out
    assert re.search(r"^demo succeeded in [\d.]+ s$", out, re.M), out
    # secrets of the lab never reach the summary
    assert "Demo-" not in out and "Sim-Passw0rd" not in out
    assert_nothing_left(demo, err)


def test_demo_interrupted_mid_run_stops_everything_it_started() -> None:
    demo = Demo()
    # all lab parts are up and the syncs are about to run: the worst moment to be interrupted
    demo.wait_for_stderr(r"vcsim at https://127\.0\.0\.1:", timeout=300)
    os.kill(demo.proc.pid, signal.SIGINT)  # the demo alone: it must stop its children itself
    code, out, err = demo.finish(timeout=120)
    assert code == 130, err
    assert "interrupted" in err
    assert "demo succeeded" not in out
    assert_nothing_left(demo, err)
