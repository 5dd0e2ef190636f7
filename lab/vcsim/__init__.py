"""govmomi's vCenter simulator for tests, benchmarks and demos: build (lab.vcsim.build) and run
(lab.vcsim.launcher). Everything listens on 127.0.0.1 only."""

from __future__ import annotations

from typing import Any

__all__ = ["Vcsim", "start"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m lab.vcsim.build` does not import the launcher first.
    if name in __all__:
        from lab.vcsim import launcher

        return getattr(launcher, name)
    raise AttributeError(name)
