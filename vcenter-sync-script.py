#!/usr/bin/env python3
"""Sync vCenter datacenters, clusters and ESXi hosts to DSM's vcenter-sync edge function.

Non-destructive: it never asks DSM to delete anything."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib

lib.require_runtime()

from lib.cli import run  # noqa: E402
from lib.sync.vcenter import build_parser, main  # noqa: E402

if __name__ == "__main__":
    run(build_parser(Path(__file__).name, __doc__), main)
