"""Shared pytest setup. Fixtures for each lab stand-in live in tests/fixtures/<part>.py."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = [
    "tests.fixtures.backend",
    "tests.fixtures.ome",
    "tests.fixtures.idrac",
    "tests.fixtures.vcsim",
]
