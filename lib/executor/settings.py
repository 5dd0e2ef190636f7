"""Settings the handlers read (IDRAC_*, POWER_*), read ONCE by lib.executor.app.build from the
program's Env (the one that honours --env-file), validated with the rest, and handed to handlers
as ctx.settings. No handler or client reads the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib.config import Env, IdracSettings, idrac_settings


@dataclass(frozen=True)
class HandlerSettings:
    idrac: IdracSettings  # default credentials, TLS and timeout of iDRAC connections
    idrac_busy_retry_seconds: float  # IDRAC_BUSY_RETRY_SECONDS: time budget for busy-code retries
    power_action_timeout: float  # POWER_ACTION_TIMEOUT: default wait for the requested power state
    power_poll_seconds: float  # POWER_POLL_SECONDS: default interval between power-state reads


def handler_settings(env: Env) -> HandlerSettings:
    """Read the handler settings from env; problems are collected in env (call env.check())."""
    return HandlerSettings(
        idrac=idrac_settings(env),
        idrac_busy_retry_seconds=env.float("IDRAC_BUSY_RETRY_SECONDS", min=0),
        power_action_timeout=env.float("POWER_ACTION_TIMEOUT", min=1),
        power_poll_seconds=env.float("POWER_POLL_SECONDS", min=0.05),
    )


def handler_settings_from_process() -> HandlerSettings:
    """For callers that build a Services by hand (tests, benches): the process environment and the
    default .env, validated. job-executor.py never uses this: app.build passes its own."""
    env = Env()
    settings = handler_settings(env)
    env.check()
    return settings
