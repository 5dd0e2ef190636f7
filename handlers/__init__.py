"""The handler registry: job_type -> handler class, one explicit table.

HANDLERS maps each job type to "module:ClassName" (imported lazily, on first use, so one broken
handler module does not take the others down: its types are reported as unavailable by
`job-executor.py --check` and in the heartbeat's last_error, and their jobs stay pending).

To add a handler: write handlers/<area>.py with a subclass of handlers.base.Handler and add one line
per job type below.

Tests and benchmarks (not for production use) add handlers at run time:
- in-process: `handlers.register(MyHandler)` (and `handlers.unregister(...)` / `reset_extra()` after);
- in executor processes: EXECUTOR_EXTRA_HANDLERS="pkg.module:attr[,pkg.other:attr]" where attr is a
  Handler subclass or a list/tuple of them; the daemon calls `load_extra()` at start-up.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable

from handlers.base import Handler
from lib.errors import ConfigError
from lib.executor.errors import UnknownJobType

log = logging.getLogger(__name__)

# The ONE table of built-in handlers: job_type -> "module:Class". Keep it sorted by job type.
HANDLERS: dict[str, str] = {
    "bios_config_read": "handlers.inventory:BiosConfigReadHandler",
    "fetch_event_logs": "handlers.inventory:FetchEventLogsHandler",
    "firmware_inventory_scan": "handlers.inventory:FirmwareInventoryScanHandler",
    "health_check": "handlers.health:HealthCheckHandler",
    "openmanage_sync": "handlers.inventory_sync:OpenManageSyncHandler",
    "power_action": "handlers.power:PowerActionHandler",
    "test_credentials": "handlers.credentials_test:TestCredentialsHandler",
    "vcenter_sync": "handlers.inventory_sync:VcenterSyncHandler",
}

_lock = threading.Lock()
_instances: dict[str, Handler] = {}  # job_type -> instance (one instance per class, shared)
_by_class: dict[type, Handler] = {}
_extra: dict[str, type[Handler]] = {}  # registered at run time (tests, benches)
_broken: dict[str, str] = {}  # job_type -> why its module could not be loaded
_extra_modules: dict[str, str] = {}  # module -> its file, imported through EXECUTOR_EXTRA_HANDLERS


def register(handler_cls: type[Handler], job_types: Iterable[str] | None = None) -> None:
    """Register a handler class at run time (tests/benches); overrides the table for its types."""
    types = tuple(job_types) if job_types is not None else tuple(handler_cls.job_types)
    if not types:
        raise ValueError(f"{handler_cls.__name__} declares no job_types")
    with _lock:
        for jt in types:
            _extra[jt] = handler_cls
            _instances.pop(jt, None)
            _broken.pop(jt, None)


def unregister(job_types: Iterable[str]) -> None:
    with _lock:
        for jt in job_types:
            _extra.pop(jt, None)
            _instances.pop(jt, None)


def reset_extra() -> None:
    """Forget every run-time registration (test teardown)."""
    with _lock:
        for jt in list(_extra):
            _instances.pop(jt, None)
        _extra.clear()
        _extra_modules.clear()


def load_extra(spec: str | None) -> list[str]:
    """Import and register EXECUTOR_EXTRA_HANDLERS ("module:attr,..."); returns the job types added.
    Raises ConfigError naming the variable and the item when one cannot be loaded (exit 2)."""
    added: list[str] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        module_name, _, attr = item.partition(":")
        try:
            module = importlib.import_module(module_name)
            obj = getattr(module, attr or "HANDLERS")
        except Exception as exc:  # any import-time failure is a configuration problem here
            raise ConfigError(
                f"EXECUTOR_EXTRA_HANDLERS: cannot load {item!r}: {type(exc).__name__}: {exc}",
                hint="Use module:attr of an importable module (PYTHONPATH), or unset the variable "
                "(it is a test and benchmark hook).",
            ) from exc
        classes = obj if isinstance(obj, list | tuple) else [obj]
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Handler) and cls.job_types):
                raise ConfigError(
                    f"EXECUTOR_EXTRA_HANDLERS: {item!r} is not a Handler subclass (or a list of them) "
                    "with job_types"
                )
            register(cls)
            added.extend(cls.job_types)
        with _lock:
            _extra_modules[module_name] = str(getattr(module, "__file__", None) or "?")
    return added


def extra_modules() -> dict[str, str]:
    """Modules imported through EXECUTOR_EXTRA_HANDLERS (name -> file), for the start-up warning
    and --check: code from outside the handler table runs in this executor."""
    with _lock:
        return dict(_extra_modules)


def _instantiate(cls: type[Handler]) -> Handler:
    inst = _by_class.get(cls)
    if inst is None:
        inst = cls()
        _by_class[cls] = inst
    return inst


def get(job_type: str) -> Handler:
    """The handler for a job type; raises UnknownJobType when none is registered or it fails to load."""
    with _lock:
        if job_type in _instances:
            return _instances[job_type]
        cls = _extra.get(job_type)
        if cls is None:
            target = HANDLERS.get(job_type)
            if target is None:
                raise UnknownJobType(f"no handler for job type {job_type!r}")
            if job_type in _broken:
                raise UnknownJobType(f"handler for {job_type!r} failed to load: {_broken[job_type]}")
            module_name, _, cls_name = target.partition(":")
            try:
                cls = getattr(importlib.import_module(module_name), cls_name)
            except Exception as exc:  # a broken module must not take the executor down
                _broken[job_type] = f"{type(exc).__name__}: {exc}"
                log.error("handler %s for %s cannot be loaded: %s", target, job_type, _broken[job_type])
                raise UnknownJobType(f"handler for {job_type!r} failed to load: {_broken[job_type]}") from exc
        inst = _instantiate(cls)
        _instances[job_type] = inst
        return inst


def available_types() -> list[str]:
    """Job types this process can run (table entries that load, plus run-time registrations)."""
    types = []
    for jt in sorted(set(HANDLERS) | set(_extra)):
        try:
            get(jt)
        except UnknownJobType:
            continue
        types.append(jt)
    return types


def broken_types() -> dict[str, str]:
    """Table entries whose module failed to load, with the reason (for --check and the heartbeat)."""
    available_types()
    with _lock:
        return dict(_broken)
