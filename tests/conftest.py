"""Shared pytest setup. Fixtures for each lab stand-in live in tests/fixtures/<part>.py."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = [
    "tests.fixtures.backend",
    "tests.fixtures.ome",
    "tests.fixtures.idrac",
    "tests.fixtures.vcsim",
]


def pytest_addoption(parser):
    parser.addoption(
        "--no-skips",
        action="store_true",
        default=os.environ.get("DSM_TESTS_NO_SKIPS", "") not in ("", "0", "false"),
        help="turn every skipped test into a failure (CI sets DSM_TESTS_NO_SKIPS=1), so a missing lab "
        "part (vcsim, node, systemd-analyze) cannot make the suite green without running those tests",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.config.getoption("--no-skips"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but --no-skips is on (DSM_TESTS_NO_SKIPS): {reason}"
