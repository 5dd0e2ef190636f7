"""What the per-server handlers share: the per-target execute skeleton, written once.

Every iDRAC handler that works server by server does the same four things: resolve the targets, run
one function per server in a bounded pool inside one named step, put what succeeded and what failed
(and why) into details.result, and fail the job naming the servers that failed. `run_on_targets`
does exactly that, so a handler only writes its `one(server, task)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handlers.base import JobContext, Server, TargetResult, TaskHandle, raise_for_failed_targets

MAX_WORKERS = 32  # the real iDRAC concurrency is bounded by the runner's iDRAC slots


def failed_targets(results: list[TargetResult]) -> list[dict[str, Any]]:
    """The details.result "failed" list: each failed server and its error."""
    return [
        {"server_id": r.target.id, "server": r.target.label, "error": r.error} for r in results if not r.ok
    ]


def run_on_targets(
    ctx: JobContext,
    what: str,
    one: Callable[[Server, TaskHandle], Any],
    *,
    retry_safe: bool,
    max_workers: int = MAX_WORKERS,
    summarize: Callable[[list[Any]], dict[str, Any]] | None = None,
    **result: Any,
) -> list[TargetResult]:
    """Run `one(server, task)` for every target in one step named "<what> on N server(s)".

    details.result gets `result`, `servers` (the values `one` returned), `failed` (server and
    error of each failure) and whatever `summarize(servers)` returns. Raises TargetsFailed when
    any server failed (after the result is recorded), so the job fails and lists them.
    """
    targets = ctx.targets()
    with ctx.step(f"{what} on {len(targets)} server(s)", retry_safe=retry_safe):
        results = ctx.run_per_target(targets, one, max_workers=max(1, min(max_workers, len(targets))))
        done = [r.value for r in results if r.ok]
        ctx.set_result(
            **result, servers=done, failed=failed_targets(results), **(summarize(done) if summarize else {})
        )
        # Inside the step: when a server failed, this step (not only "execute") is the failed one.
        raise_for_failed_targets(results)
    return results
