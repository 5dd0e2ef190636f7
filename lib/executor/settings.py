"""Settings the handlers read (IDRAC_*, POWER_*), read ONCE by lib.executor.app.build from the
program's Env (the one that honours --env-file), validated with the rest, and handed to handlers
as ctx.settings. No handler or client reads the environment itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lib.config import Env, IdracSettings, idrac_settings


@dataclass(frozen=True)
class SyncJobSettings:
    """What the openmanage_sync and vcenter_sync jobs take from the executor's environment (the
    connection itself, address, user, password and verify_ssl, comes from DSM's tables). The
    defaults are those of the Var table in lib/config.py."""

    ome_ca_bundle: str | None = None  # OME_CA_BUNDLE
    ome_page_size: int = 200  # OME_PAGE_SIZE
    ome_timeout: float = 60.0  # OME_TIMEOUT
    ome_inventory_threads: int = 8  # OME_INVENTORY_THREADS
    ome_batch_size: int = 200  # OME_BATCH_SIZE
    vcenter_ca_bundle: str | None = None  # VCENTER_CA_BUNDLE
    vcenter_batch_size: int = 500  # VCENTER_BATCH_SIZE


def sync_job_settings(env: Env) -> SyncJobSettings:
    """Read the sync jobs' settings from env; problems are collected in env (call env.check())."""
    return SyncJobSettings(
        ome_ca_bundle=env.tls("OME").ca_bundle,
        ome_page_size=env.int("OME_PAGE_SIZE", min=1, max=1000),
        ome_timeout=env.float("OME_TIMEOUT", min=1),
        ome_inventory_threads=env.int("OME_INVENTORY_THREADS", min=1, max=64),
        ome_batch_size=env.int("OME_BATCH_SIZE", min=1, max=5000),
        vcenter_ca_bundle=env.tls("VCENTER").ca_bundle,
        vcenter_batch_size=env.int("VCENTER_BATCH_SIZE", min=1, max=5000),
    )


@dataclass(frozen=True)
class HandlerSettings:
    idrac: IdracSettings  # default credentials, TLS and timeout of iDRAC connections
    idrac_busy_retry_seconds: float  # IDRAC_BUSY_RETRY_SECONDS: time budget for busy-code retries
    power_action_timeout: float  # POWER_ACTION_TIMEOUT: default wait for the requested power state
    power_poll_seconds: float  # POWER_POLL_SECONDS: default interval between power-state reads
    sync: SyncJobSettings = field(default_factory=SyncJobSettings)  # OME_* / VCENTER_* of sync jobs


def handler_settings(env: Env) -> HandlerSettings:
    """Read the handler settings from env; problems are collected in env (call env.check())."""
    return HandlerSettings(
        idrac=idrac_settings(env),
        idrac_busy_retry_seconds=env.float("IDRAC_BUSY_RETRY_SECONDS", min=0),
        power_action_timeout=env.float("POWER_ACTION_TIMEOUT", min=1),
        power_poll_seconds=env.float("POWER_POLL_SECONDS", min=0.05),
        sync=sync_job_settings(env),
    )


def handler_settings_from_process() -> HandlerSettings:
    """For callers that build a Services by hand (tests, benches): the process environment and the
    default .env, validated. job-executor.py never uses this: app.build passes its own."""
    env = Env()
    settings = handler_settings(env)
    env.check()
    return settings
