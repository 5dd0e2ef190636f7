"""What both sync e2e suites share: run a sync script as a subprocess and read its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OME_SCRIPT = ROOT / "openmanage-sync-script.py"
VCENTER_SCRIPT = ROOT / "vcenter-sync-script.py"


def command(script: Path, tmp_path: Path, *args: str) -> list[str]:
    """The script with an empty env file (nothing from a developer's .env) and a private lock."""
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    return [
        sys.executable,
        str(script),
        "--env-file",
        str(empty_env_file),
        "--lock-file",
        str(tmp_path / "lock"),
        *args,
    ]


def base_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    return {**base, **env}


def run_script(
    script: Path, tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(script, tmp_path, *args),
        env=base_env(tmp_path, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_script(script: Path, tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The script in the background (stderr piped, stdout discarded), for signal tests."""
    return subprocess.Popen(
        command(script, tmp_path, *args),
        env=base_env(tmp_path, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def report_of(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold the JSON report only"
    return json.loads(lines[0])


def wait_for(condition: Callable[[], bool], what: str, *, timeout: float = 120.0) -> None:
    """Poll `condition` until it holds; fail the test (never fall through) after `timeout` s.
    Generous on purpose: two cores are shared by several test sessions."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)
