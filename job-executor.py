#!/usr/bin/env python3
"""Run DSM jobs: poll the jobs table, claim jobs atomically and run each through its handler."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib  # noqa: E402

lib.require_runtime()

from lib.cli import base_parser, run  # noqa: E402
from lib.errors import ConfigError  # noqa: E402


def main(args) -> int:
    raise ConfigError("This program's workflow is not built yet.")


if __name__ == "__main__":
    run(base_parser(Path(__file__).name, __doc__), main)
