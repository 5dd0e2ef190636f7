"""power_action: a Redfish ComputerSystem.Reset on each target server, then wait for the state.

details.action is a Redfish ResetType. Idempotent: On when already On, GracefulShutdown or ForceOff
when already Off, succeed without a reset. A graceful action is never escalated to a forced one:
when GracefulShutdown does not power the server off in time, the server fails with the hint to use
ForceOff. servers.power_state is written with what the BMC reports at the end.

Restarts (GracefulRestart, ForceRestart, PowerCycle) are verified, not just accepted: the system's
LastResetTime and BootProgress (LastState, LastStateTime) are read before the reset, and the job
waits until one of them changes, or the power state is seen leaving On, and the server is On again.
A Dell warm reset keeps PowerState On throughout, so the power state alone proves nothing. Where
the BMC exposes neither LastResetTime nor BootProgress (older firmware), the task log says WARN that
the restart could not be verified and the summary has restart_verified = null.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from handlers.base import Handler, InvalidJobInput, Job, JobContext, Server, TaskHandle
from handlers.common import run_on_targets
from lib.errors import ConnectivityError, RemoteError
from lib.redfish import RETRYABLE_CODES, client_for

log = logging.getLogger(__name__)

RESET_TYPES = (
    "On",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "ForceOff",
    "PowerCycle",
    "PushPowerButton",
    "Nmi",
)
_BY_LOWER = {t.lower(): t for t in RESET_TYPES}
RESTARTS = ("GracefulRestart", "ForceRestart", "PowerCycle")


def wanted_state(action: str, before: str | None) -> str | None:
    """The power state an action ends in (None: nothing to wait for)."""
    if action in ("On", *RESTARTS):
        return "On"
    if action in ("GracefulShutdown", "ForceOff"):
        return "Off"
    if action == "PushPowerButton":
        return "Off" if before == "On" else "On"
    return None  # Nmi


def already_done(action: str, state: str | None) -> bool:
    return (action == "On" and state == "On") or (
        action in ("GracefulShutdown", "ForceOff") and state == "Off"
    )


def _stamp(value: Any) -> str | None:
    """A timestamp worth comparing; Dell answers '0000-00-00T00:00:00+00:00' when it has none."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return value


def restart_markers(system: dict[str, Any]) -> dict[str, str | None]:
    """What changes when the host restarts, as far as this BMC tells: LastResetTime and BootProgress."""
    bp = system.get("BootProgress")
    bp = bp if isinstance(bp, dict) else {}
    state = bp.get("OemLastState") if bp.get("LastState") == "OEM" else bp.get("LastState")
    return {
        "LastResetTime": _stamp(system.get("LastResetTime")),
        "BootProgress.LastStateTime": _stamp(bp.get("LastStateTime")),
        "BootProgress.LastState": state if isinstance(state, str) else None,
    }


def can_verify_restart(system: dict[str, Any]) -> bool:
    """True when the BMC exposes a timestamp that a restart must change."""
    m = restart_markers(system)
    return bool(m["LastResetTime"] or m["BootProgress.LastStateTime"])


def restart_evidence(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How `now` (a later read of the system) shows that the host restarted since `before`, or None."""
    state = now.get("PowerState")
    if state in ("Off", "PoweringOff", "PoweringOn"):
        return f"power state went {state}"
    old, new = restart_markers(before), restart_markers(now)
    for key, value in new.items():
        if value and value != old[key]:
            return f"{key} changed from {old[key]} to {value}"
    return None


def _number(details: Any, key: str, default: float | None, minimum: float) -> float | None:
    value = details.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidJobInput(f"details.{key}", f"{value!r} is not a number") from None
    if number < minimum:
        raise InvalidJobInput(f"details.{key}", f"{number} is below {minimum}")
    return number


class PowerActionHandler(Handler):
    job_types = ("power_action",)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        d = job.details
        raw = d.get("action") or d.get("power_action") or d.get("reset_type")
        if not raw:
            raise InvalidJobInput("details.action", f"missing; one of {', '.join(RESET_TYPES)}")
        action = _BY_LOWER.get(str(raw).strip().lower())
        if action is None:
            raise InvalidJobInput(
                "details.action",
                f"{raw!r} is not a Redfish ResetType; one of {', '.join(RESET_TYPES)}",
                hint="'Off' is ambiguous: use GracefulShutdown (asks the OS) or ForceOff (cuts power).",
            )
        # None: the executor's POWER_ACTION_TIMEOUT / POWER_POLL_SECONDS (ctx.settings, in execute)
        return {
            "action": action,
            "timeout": _number(d, "timeout_seconds", None, 1),
            "poll": _number(d, "poll_interval_seconds", None, 0.05),
            "wait": bool(d.get("wait", True)),
        }

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        params = {
            **params,
            "timeout": params["timeout"] or ctx.settings.power_action_timeout,
            "poll": params["poll"] or ctx.settings.power_poll_seconds,
        }
        action = params["action"]
        run_on_targets(
            ctx,
            action,
            lambda s, t: self.one(ctx, params, s, t),
            retry_safe=action in ("On", "ForceOff"),
            action=action,
        )

    def one(
        self, ctx: JobContext, params: dict[str, Any], server: Server, task: TaskHandle
    ) -> dict[str, Any]:
        action = params["action"]
        creds = ctx.credentials_for(server)
        with client_for(ctx, server, creds) as bmc:
            system = bmc.system()
            before = system.get("PowerState")
            task.log(f"power state is {before}; requested {action}")
            if already_done(action, before):
                task.log(f"already {before}: nothing to do")
                ctx.store.update_server(server.id, power_state=before)
                return _summary(server, action, before, before, changed=False)
            if action in RESTARTS and before == "Off":
                raise RemoteError(
                    f"{action} needs the server powered on, but it is Off",
                    hint="Use the On action to power the server on.",
                )
            changed = bmc.reset(action, system)
            task.log(
                f"{action} accepted by the iDRAC" if changed else f"iDRAC reports the server already {before}"
            )
            task.progress(30)
            want = wanted_state(action, before)
            after = before
            extra: dict[str, Any] = {}
            if want and params["wait"] and action in RESTARTS and changed:
                after, evidence = self._wait_restart(ctx, bmc, task, server, action, system, params)
                extra = {"restart_verified": evidence is not None or None, "restart_evidence": evidence}
            elif want and params["wait"]:
                after = self._wait(ctx, bmc, task, server, action, want, params)
            elif want is None:
                after = bmc.power_state()
            ctx.store.update_server(server.id, power_state=after)
            task.log(f"power state is now {after}")
            return {**_summary(server, action, before, after, changed=changed), **extra}

    def _wait_restart(
        self,
        ctx: JobContext,
        bmc: Any,
        task: TaskHandle,
        server: Server,
        action: str,
        system: dict[str, Any],
        p: dict,
    ) -> tuple[str, str | None]:
        """Wait until the restart shows (a marker changed or the power left On) and the server is
        On. Returns (power state, evidence); evidence None when this BMC cannot show a restart."""
        if not can_verify_restart(system):
            after = self._wait(ctx, bmc, task, server, action, "On", p)
            msg = (
                f"{action} was accepted, but this BMC exposes neither LastResetTime nor BootProgress: "
                f"the restart could not be verified (power state {after})"
            )
            task.log(msg, "WARN")
            log.warning("%s: %s", server.label, msg)
            return after, None
        marks = restart_markers(system)
        task.log("before the reset: " + ", ".join(f"{k} {v}" for k, v in marks.items() if v))
        found: dict[str, str | None] = {"evidence": None}

        def restarted(now: dict[str, Any]) -> bool:
            if found["evidence"] is None:
                found["evidence"] = restart_evidence(system, now)
            return found["evidence"] is not None and now.get("PowerState") == "On"

        def no_restart(state: str | None) -> RemoteError:
            if found["evidence"] is not None:  # it restarted, but did not come back On in time
                return RemoteError(
                    f"{action}: the server restarted ({found['evidence']}) but was not On within "
                    f"{p['timeout']:g} s (last seen {state})",
                    hint="Check the server in the iDRAC UI (virtual console, Lifecycle log).",
                )
            unchanged = ", ".join(f"{k} still {v}" for k, v in marks.items() if v)
            if action == "GracefulRestart":
                return RemoteError(
                    f"GracefulRestart: no sign of a restart within {p['timeout']:g} s ({unchanged}, power "
                    f"state {state}); the operating system did not restart. Not forcing it: run "
                    "power_action ForceRestart to reset the server (unsaved data is lost)",
                    hint="Check the OS console; to reset anyway run power_action ForceRestart.",
                )
            return RemoteError(
                f"{action}: no sign of a restart within {p['timeout']:g} s ({unchanged}, power state {state})",
                hint="Check the server in the iDRAC UI (Lifecycle log); raise details.timeout_seconds if it is slow.",
            )

        after = self._wait(ctx, bmc, task, server, action, "On", p, done=restarted, on_timeout=no_restart)
        task.log(f"restart verified: {found['evidence']}")
        return after, found["evidence"]

    def _wait(
        self,
        ctx: JobContext,
        bmc: Any,
        task: TaskHandle,
        server: Server,
        action: str,
        want: str,
        p: dict,
        *,
        done: Callable[[dict[str, Any]], bool] | None = None,
        on_timeout: Callable[[str | None], RemoteError] | None = None,
    ) -> str:
        """Poll the system until its power state is `want` (and `done(system)` holds, if given)."""
        seen: dict[str, str | None] = {"state": None}

        def reached() -> str | None:
            try:
                system = bmc.system()
            except ConnectivityError as exc:  # BMC rebooting or busy: keep waiting, the deadline bounds it
                log.info("%s: power state unreadable while waiting: %s", server.label, exc)
                return None
            except RemoteError as exc:
                if exc.code in RETRYABLE_CODES or exc.status in (502, 503, 504):
                    return None
                raise
            state = system.get("PowerState")
            seen["state"] = state
            ok = state == want if done is None else done(system)
            return state if ok and state == want else None

        try:
            return ctx.wait_for(reached, timeout=p["timeout"], interval=p["poll"], what=f"power state {want}")
        except TimeoutError:
            if seen["state"]:
                ctx.store.update_server(server.id, power_state=seen["state"])
            if on_timeout is not None:
                raise on_timeout(seen["state"]) from None
            if action == "GracefulShutdown":
                # The per-server error is all the job details keep: say what to do in it.
                raise RemoteError(
                    f"GracefulShutdown: the server did not power off within {p['timeout']:g} s "
                    f"(power state {seen['state']}); the operating system did not shut down. "
                    "Not forcing it: run power_action ForceOff to cut power (unsaved data is lost)",
                    hint="Check the OS console; to cut power anyway run power_action ForceOff.",
                ) from None
            raise RemoteError(
                f"{action}: power state {want} not reached within {p['timeout']:g} s (last seen {seen['state']})",
                hint="Check the server in the iDRAC UI (Lifecycle log); raise details.timeout_seconds if it is slow.",
            ) from None


def _summary(
    server: Server, action: str, before: str | None, after: str | None, *, changed: bool
) -> dict[str, Any]:
    return {
        "server_id": server.id,
        "server": server.label,
        "action": action,
        "before": before,
        "after": after,
        "changed": changed,
    }
