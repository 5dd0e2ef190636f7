"""Typed errors of the executor. Handlers import them through handlers.base."""

from __future__ import annotations

from lib.errors import AgentError, CancelledError


class InvalidJobInput(AgentError):
    """A job's input is missing or wrong; the job fails in preflight with a message naming the field."""

    default_hint = "Fix the job's parameters (details / target_scope) in the UI and create the job again."

    def __init__(self, field: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"invalid job input: {field}: {problem}", hint=hint)
        self.field = field
        self.problem = problem


class UnknownJobType(AgentError):
    default_hint = "No handler on this executor knows this job type; another executor may serve it."


class AlreadyDone(Exception):
    """Raised by preflight when the work is already done (idempotency): execute is skipped.

    The runner still runs postcheck, then marks the job completed with this message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Interrupted(CancelledError):
    """The job must stop now: raised by ctx.sleep / ctx.wait_for / ctx.check (and ctx.step on entry)."""


class JobCancelled(Interrupted):
    default_hint = "The job was cancelled (status set to cancelled); nothing more will run for it."


class JobPaused(Interrupted):
    """The UI set the running job to paused: stop like a cancel, clean up, release the claim."""

    default_hint = "The job was paused; set it back to pending to run it again from the start."


class ShutdownInterrupt(Interrupted):
    default_hint = "The executor was stopped (SIGTERM) before the job finished; re-queue it if safe."


class LeaseLost(Interrupted):
    """Our claim is gone: the job was taken over, finished elsewhere or marked failed as stale."""

    default_hint = "Another executor or the operator changed this job; this executor stopped working on it."
