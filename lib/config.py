"""Settings: command-line flags, then environment variables, then a .env file.

`VARIABLES` is the one table of every environment variable the programs read; README.md's table
is checked against it by a test. An `Env` reads values through that table, collects every problem
it finds, and `Env.check()` reports them all at once as one ConfigError.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from lib.errors import ConfigError
from lib.http import TLSConfig
from lib.logs import register_secret

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ENV_FILE = PROJECT_ROOT / ".env"

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Var:
    name: str
    default: str | None
    help: str
    secret: bool = False
    aliases: tuple[str, ...] = ()


def _tls_vars(system: str, label: str) -> list[Var]:
    return [
        Var(f"{system}_VERIFY_SSL", "true", f"Verify the TLS certificate of {label}."),
        Var(f"{system}_CA_BUNDLE", None, f"CA bundle file (PEM) that signed the certificate of {label}."),
    ]


VARIABLES: list[Var] = [
    # Logging
    Var("LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR."),
    Var("LOG_FORMAT", "text", "Log format on stderr: text, or json (one object per line)."),
    # DSM backend (Supabase)
    Var("SUPABASE_URL", None, "DSM backend URL, e.g. https://xyz.supabase.co.", aliases=("DSM_URL",)),
    Var("SUPABASE_ANON_KEY", None, "Supabase anon (public) key; sent as apikey to edge functions."),
    Var(
        "SUPABASE_SERVICE_ROLE_KEY",
        None,
        "Supabase service-role key (executor only: reads and writes jobs).",
        secret=True,
        aliases=("SERVICE_ROLE_KEY",),
    ),
    Var(
        "DSM_EDGE_FUNCTION_URL",
        None,
        "Full URL of the openmanage-sync edge function (overrides SUPABASE_URL).",
    ),
    Var("DSM_API_TOKEN", None, "DSM API token for edge functions (X-API-Token).", secret=True),
    Var("DSM_JWT_TOKEN", None, "A DSM user JWT, instead of DSM_EMAIL and DSM_PASSWORD.", secret=True),
    Var("DSM_EMAIL", None, "DSM user (admin or operator) to sign in as."),
    Var("DSM_PASSWORD", None, "Password of DSM_EMAIL.", secret=True),
    Var("EXECUTOR_SHARED_SECRET", None, "HMAC secret shared with the DSM edge functions.", secret=True),
    *_tls_vars("SUPABASE", "the DSM backend"),
    # OpenManage Enterprise
    Var("OME_HOST", None, "OME appliance: host name, address, host:port or URL."),
    Var("OME_PORT", "443", "OME HTTPS port (when OME_HOST has none)."),
    Var("OME_USERNAME", None, "OME user.", aliases=("OME_USER",)),
    Var("OME_PASSWORD", None, "OME password (asked for on a terminal when missing).", secret=True),
    *_tls_vars("OME", "the OME appliance"),
    Var("OME_PAGE_SIZE", "200", "Devices per OME page ($top), 1 to 1000."),
    Var("OME_TIMEOUT", "60", "Seconds to wait for one OME answer."),
    Var("OME_INVENTORY_THREADS", "8", "Parallel per-device inventory reads with --inventory."),
    Var("OME_BATCH_SIZE", "200", "Devices per openmanage-sync request."),
    # vCenter
    Var("VCENTER_HOST", None, "vCenter Server host name or address."),
    Var("VCENTER_PORT", "443", "vCenter HTTPS port."),
    Var("VCENTER_USER", None, "vCenter user, e.g. svc-dsm@vsphere.local."),
    Var("VCENTER_PASSWORD", None, "vCenter password (asked for on a terminal when missing).", secret=True),
    *_tls_vars("VCENTER", "vCenter"),
    Var("VCENTER_ID", None, "The DSM vcenters row id this vCenter belongs to (sent as vcenter_id)."),
    Var("VCENTER_BATCH_SIZE", "500", "Hosts per vcenter-sync request."),
    # iDRAC
    Var("IDRAC_USER", None, "Default iDRAC user when DSM has no credential for a server."),
    Var("IDRAC_PASSWORD", None, "Password of IDRAC_USER.", secret=True),
    *_tls_vars("IDRAC", "the iDRACs"),
    Var(
        "IDRAC_LEGACY_TLS",
        "false",
        "Allow old TLS ciphers for iDRAC 8 firmware (lowers OpenSSL security level).",
    ),
    Var("IDRAC_TIMEOUT", "30", "Seconds to wait for one iDRAC answer."),
    Var(
        "IDRAC_BUSY_RETRY_SECONDS", "60", "Time budget for retrying a busy iDRAC (RAC0218, SYS518, SWC0700)."
    ),
    Var("POWER_ACTION_TIMEOUT", "300", "Seconds a power_action waits for the requested power state."),
    Var("POWER_POLL_SECONDS", "2", "Seconds between power-state reads while a power_action waits."),
    # Executor
    Var("EXECUTOR_ID", None, "Executor identity in heartbeats and claims (default executor-<hostname>)."),
    Var("EXECUTOR_POLL_INTERVAL", "2", "Seconds between polls for runnable jobs."),
    Var("EXECUTOR_MAX_CONCURRENT_JOBS", "4", "Jobs run at once."),
    Var(
        "EXECUTOR_LEASE_SECONDS",
        "60",
        "Claim lease, at least 15; a job whose lease expires is failed by any executor.",
    ),
    Var("EXECUTOR_HEARTBEAT_SECONDS", "15", "Seconds between executor_heartbeats writes."),
    Var("EXECUTOR_DRAIN_SECONDS", "120", "On SIGTERM, seconds running jobs may take to finish."),
    Var(
        "EXECUTOR_JOB_TYPES", None, "Comma-separated job types this executor serves (default: all it knows)."
    ),
    Var("EXECUTOR_EXTRA_HANDLERS", None, "Test and bench hook: module:attr of extra handlers to register."),
]

_BY_NAME: dict[str, Var] = {v.name: v for v in VARIABLES}


def variable(name: str) -> Var:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not in lib.config.VARIABLES: add it there (and to README.md)") from None


class Env:
    """Reads settings by variable name; flags win over the environment, which wins over .env."""

    def __init__(
        self,
        overrides: Mapping[str, object | None] | None = None,
        *,
        env_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.environ = os.environ if environ is None else environ
        self.env_file = Path(env_file) if env_file else DEFAULT_ENV_FILE
        self.file_values: dict[str, str] = {}
        self.problems: list[str] = []
        if self.env_file.exists():  # /dev/null is a fine way to say "no file"
            try:
                values = dotenv_values(self.env_file)
            except OSError as exc:
                values = {}
                self.problems.append(f"--env-file {self.env_file}: {exc.strerror}")
            self.file_values = {k: v for k, v in values.items() if v is not None}
        elif env_file is not None:
            self.problems.append(f"--env-file {self.env_file}: no such file")
        self.interactive = sys.stdin.isatty() if interactive is None else interactive

    def raw(self, name: str) -> tuple[str | None, str]:
        """The value and where it came from (flag, environment, .env file or default)."""
        var = variable(name)
        if name in self.overrides:
            return str(self.overrides[name]), f"flag for {name}"
        for key in (name, *var.aliases):
            if self.environ.get(key, "") != "":
                return self.environ[key], key
        for key in (name, *var.aliases):
            if self.file_values.get(key, "") != "":
                return self.file_values[key], f"{key} in {self.env_file}"
        return var.default, f"{name} (default)"

    def str(self, name: str, *, required: bool = False) -> str | None:
        value, _ = self.raw(name)
        if value is not None:
            value = value.strip()
        if not value:
            if required:
                self.problems.append(f"{name} is required but not set")
            return None
        if variable(name).secret:
            register_secret(value)
        return value

    def password(self, name: str, *, required: bool = True, prompt: str | None = None) -> str | None:
        value = self.str(name)
        if value is None and required:
            if self.interactive:
                value = getpass.getpass(prompt or f"{name}: ") or None
                register_secret(value)
            if value is None:
                self.problems.append(f"{name} is required but not set (no terminal to ask on)")
        return value

    def bool(self, name: str) -> bool:
        value, source = self.raw(name)
        text = (value or "").strip().lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS:
            return False
        self.problems.append(f"{source}: {value!r} is not a boolean (use true/false, 1/0, yes/no)")
        return (variable(name).default or "").lower() in TRUE_WORDS

    def int(self, name: str, *, min: int | None = None, max: int | None = None) -> int:
        value, source = self.raw(name)
        try:
            number = int(str(value).strip())
        except (TypeError, ValueError):
            self.problems.append(f"{source}: {value!r} is not a whole number")
            return int(variable(name).default or 0)
        if (min is not None and number < min) or (max is not None and number > max):
            bounds = f"{min if min is not None else '-inf'}..{max if max is not None else 'inf'}"
            self.problems.append(f"{source}: {number} is out of range {bounds}")
        return number

    def float(self, name: str, *, min: float | None = None) -> float:
        value, source = self.raw(name)
        try:
            number = float(str(value).strip())
        except (TypeError, ValueError):
            self.problems.append(f"{source}: {value!r} is not a number")
            return float(variable(name).default or 0)
        if min is not None and number < min:
            self.problems.append(f"{source}: {number} is below {min}")
        return number

    def list(self, name: str) -> tuple[str, ...]:
        value = self.str(name)
        return tuple(part.strip() for part in (value or "").split(",") if part.strip())

    def tls(self, system: str) -> TLSConfig:
        ca = self.str(f"{system}_CA_BUNDLE")
        if ca and not Path(ca).is_file():
            self.problems.append(f"{system}_CA_BUNDLE: {ca} is not a readable file")
        legacy = self.bool("IDRAC_LEGACY_TLS") if system == "IDRAC" else False
        return TLSConfig(
            verify=self.bool(f"{system}_VERIFY_SSL"), ca_bundle=ca, legacy=legacy, env_prefix=system
        )

    def check(self) -> None:
        if self.problems:
            problems, self.problems = self.problems, []
            if len(problems) == 1:
                raise ConfigError(f"Configuration error: {problems[0]}.")
            raise ConfigError("Configuration errors:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class DsmSettings:
    supabase_url: str | None
    anon_key: str | None
    service_role_key: str | None
    api_token: str | None
    jwt: str | None
    email: str | None
    password: str | None
    edge_function_url: str | None
    executor_secret: str | None
    tls: TLSConfig

    def __repr__(self) -> str:  # never print secrets, even in a debugger or a traceback
        return f"DsmSettings(supabase_url={self.supabase_url!r}, ...)"

    def backend_url(self, api: str, *, purpose: str = "reach the DSM backend") -> str:
        """`{base}/{api}` ("functions/v1", "auth/v1"), the base being SUPABASE_URL or, failing that,
        what precedes /functions/v1/ in DSM_EDGE_FUNCTION_URL. The one place that derives it."""
        base = self.supabase_url
        if not base and self.edge_function_url and "/functions/v1/" in self.edge_function_url:
            base = self.edge_function_url.split("/functions/v1/", 1)[0]
        if not base:
            raise ConfigError(f"SUPABASE_URL is required to {purpose}.")
        return f"{base.rstrip('/')}/{api.strip('/')}"


def dsm_settings(env: Env, *, need_service_role: bool = False) -> DsmSettings:
    url = env.str("SUPABASE_URL", required=need_service_role)
    edge_url = env.str("DSM_EDGE_FUNCTION_URL")
    if not need_service_role and not url and not edge_url:
        env.problems.append("SUPABASE_URL (or DSM_EDGE_FUNCTION_URL) is required but not set")
    for name, value in (("SUPABASE_URL", url), ("DSM_EDGE_FUNCTION_URL", edge_url)):
        if value and not value.startswith(("http://", "https://")):
            env.problems.append(f"{name}: {value!r} is not an http(s) URL")
    return DsmSettings(
        supabase_url=url.rstrip("/") if url else None,
        anon_key=env.str("SUPABASE_ANON_KEY"),
        service_role_key=env.str("SUPABASE_SERVICE_ROLE_KEY", required=need_service_role),
        api_token=env.str("DSM_API_TOKEN"),
        jwt=env.str("DSM_JWT_TOKEN"),
        email=env.str("DSM_EMAIL"),
        password=env.str("DSM_PASSWORD"),
        edge_function_url=edge_url,
        executor_secret=env.str("EXECUTOR_SHARED_SECRET"),
        tls=env.tls("SUPABASE"),
    )


@dataclass(frozen=True)
class OmeSettings:
    host: str
    port: int
    username: str
    password: str
    tls: TLSConfig
    page_size: int
    timeout: float
    inventory_threads: int
    batch_size: int

    def __repr__(self) -> str:
        return f"OmeSettings(host={self.host!r}, port={self.port}, username={self.username!r}, ...)"


def ome_settings(env: Env) -> OmeSettings:
    return OmeSettings(
        host=env.str("OME_HOST", required=True) or "",
        port=env.int("OME_PORT", min=1, max=65535),
        username=env.str("OME_USERNAME", required=True) or "",
        password=env.password("OME_PASSWORD", prompt="OME password: ") or "",
        tls=env.tls("OME"),
        page_size=env.int("OME_PAGE_SIZE", min=1, max=1000),
        timeout=env.float("OME_TIMEOUT", min=1),
        inventory_threads=env.int("OME_INVENTORY_THREADS", min=1, max=64),
        batch_size=env.int("OME_BATCH_SIZE", min=1, max=5000),
    )


@dataclass(frozen=True)
class VcenterSettings:
    host: str
    port: int
    user: str
    password: str
    tls: TLSConfig
    vcenter_id: str | None
    batch_size: int

    def __repr__(self) -> str:
        return f"VcenterSettings(host={self.host!r}, port={self.port}, user={self.user!r}, ...)"


def vcenter_settings(env: Env) -> VcenterSettings:
    return VcenterSettings(
        host=env.str("VCENTER_HOST", required=True) or "",
        port=env.int("VCENTER_PORT", min=1, max=65535),
        user=env.str("VCENTER_USER", required=True) or "",
        password=env.password("VCENTER_PASSWORD", prompt="vCenter password: ") or "",
        tls=env.tls("VCENTER"),
        vcenter_id=env.str("VCENTER_ID"),
        batch_size=env.int("VCENTER_BATCH_SIZE", min=1, max=5000),
    )


@dataclass(frozen=True)
class IdracSettings:
    user: str | None
    password: str | None
    tls: TLSConfig
    timeout: float

    def __repr__(self) -> str:
        return f"IdracSettings(user={self.user!r}, ...)"


def idrac_settings(env: Env) -> IdracSettings:
    return IdracSettings(
        user=env.str("IDRAC_USER"),
        password=env.str("IDRAC_PASSWORD"),
        tls=env.tls("IDRAC"),
        timeout=env.float("IDRAC_TIMEOUT", min=1),
    )


@dataclass(frozen=True)
class ExecutorSettings:
    executor_id: str
    poll_interval: float
    max_concurrent_jobs: int
    lease_seconds: float
    heartbeat_seconds: float
    drain_seconds: float
    job_types: tuple[str, ...]
    extra_handlers: str | None


def executor_settings(env: Env) -> ExecutorSettings:
    return ExecutorSettings(
        executor_id=env.str("EXECUTOR_ID") or f"executor-{socket.gethostname()}",
        poll_interval=env.float("EXECUTOR_POLL_INTERVAL", min=0.05),
        max_concurrent_jobs=env.int("EXECUTOR_MAX_CONCURRENT_JOBS", min=1, max=64),
        lease_seconds=env.float("EXECUTOR_LEASE_SECONDS", min=15),
        heartbeat_seconds=env.float("EXECUTOR_HEARTBEAT_SECONDS", min=0.5),
        drain_seconds=env.float("EXECUTOR_DRAIN_SECONDS", min=0),
        job_types=env.list("EXECUTOR_JOB_TYPES"),
        extra_handlers=env.str("EXECUTOR_EXTRA_HANDLERS"),
    )
