"""Executor test fixtures: a clean lab backend per test and executor processes that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.executor.helpers import Executor


@pytest.fixture
def executors(clean_backend, tmp_path: Path) -> Iterator:
    started: list[Executor] = []

    def spawn(executor_id: str, *args: str, **env: str) -> Executor:
        ex = Executor(clean_backend, executor_id, tmp_path, *args, **env)
        started.append(ex)
        return ex

    yield spawn
    for ex in started:
        ex.stop()
