"""The operator's files: env example in step with the settings table, systemd units valid."""

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.gen_settings_docs import render, render_readme

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted(DEPLOY.glob("*.service")) + sorted(DEPLOY.glob("*.timer"))


def test_env_example_lists_every_variable_with_its_default():
    assert (DEPLOY / "agent.env.example").read_text() == render(), "run python deploy/gen_settings_docs.py"


def test_readme_variable_table_is_the_settings_table():
    readme = (DEPLOY.parent / "README.md").read_text()
    assert readme == render_readme(readme), "run python deploy/gen_settings_docs.py"


def test_executor_unit_waits_longer_than_the_drain():
    text = (DEPLOY / "dsm-job-executor.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
    stop = int(text.split("TimeoutStopSec=")[1].split()[0])
    from lib.config import variable

    assert stop > int(variable("EXECUTOR_DRAIN_SECONDS").default)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # verify resolves ExecStart binaries: point them at a real python so only unit syntax is judged.
    for unit in UNITS:
        text = unit.read_text().replace(
            "/opt/dsm-agent/.venv/bin/python", shutil.which("python3") or "/bin/true"
        )
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / u.name) for u in UNITS]],
        capture_output=True,
        text=True,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # The build machine has no dsm-agent user and no /opt tree; those are install steps, not unit errors.
        if line.strip() and "dsm-agent" not in line and "/opt/" not in line
    ]
    assert not problems, "\n".join(problems)
