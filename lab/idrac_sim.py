"""A Dell iDRAC stand-in: many simulated BMCs in one process, one 127.0.0.1 port each.

The shapes follow Dell's iDRAC9 Redfish service as documented and as seen in public bug
reports: `System.Embedded.1`, `iDRAC.Embedded.1`, `Chassis/System.Embedded.1` with Thermal
and Power, `ResetType@Redfish.AllowableValues`, sessions created at
`/redfish/v1/SessionService/Sessions` (201 + `X-Auth-Token` + `Location`), 409 `PSU501` when
the server already is in the requested power state, 503 `RAC0218` past the session limit,
503 `SYS518` while data sources are unavailable, 400 `SWC0700` while the iDRAC is not ready,
401 `Base.AccessDenied` on bad credentials. Restarts behave as on a Dell: ForceRestart and
GracefulRestart are warm resets (PowerState stays On; `LastResetTime` and
`BootProgress.LastState`/`LastStateTime` on the system show the reboot), PowerCycle goes Off then On;
`restart_markers=False` hides LastResetTime and BootProgress, as older firmware does.

Use from tests through `IdracFleet` (see tests/fixtures/idrac.py), or as a program:
`python -m lab.idrac_sim --servers N [--tls] [--power-delay S]` prints one JSON line with
addresses, credentials, CA file and a control URL, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lab.tls import make_tls

ROOT = "/redfish/v1"
SYSTEM_ID = "System.Embedded.1"
MANAGER_ID = "iDRAC.Embedded.1"
SYSTEM = f"{ROOT}/Systems/{SYSTEM_ID}"
MANAGER = f"{ROOT}/Managers/{MANAGER_ID}"
CHASSIS = f"{ROOT}/Chassis/{SYSTEM_ID}"
SESSIONS = f"{ROOT}/SessionService/Sessions"
RESET_TYPES = [
    "On",
    "ForceOff",
    "ForceRestart",
    "GracefulRestart",
    "GracefulShutdown",
    "PushPowerButton",
    "Nmi",
    "PowerCycle",
]
HEALTH_ORDER = {"OK": 0, "Warning": 1, "Critical": 2}
FIRMWARE = "7.00.00.171"


def _ext(message_id: str, message: str, resolution: str, severity: str = "Critical") -> dict[str, Any]:
    return {
        "Message": message,
        "MessageArgs": [],
        "MessageArgs@odata.count": 0,
        "MessageId": message_id,
        "RelatedProperties": [],
        "RelatedProperties@odata.count": 0,
        "Resolution": resolution,
        "Severity": severity,
    }


def error_body(*infos: dict[str, Any]) -> dict[str, Any]:
    """The Redfish error envelope iDRAC answers with."""
    return {
        "error": {
            "@Message.ExtendedInfo": list(infos),
            "code": "Base.1.12.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information",
        }
    }


ACCESS_DENIED = _ext(
    "Base.1.12.AccessDenied",
    "The authentication credentials included with this request are missing or invalid.",
    "Attempt to ensure that the URI is correct and that the service has the appropriate credentials.",
)
RAC0218 = _ext(
    "IDRAC.2.9.RAC0218",
    "The maximum number of user sessions is reached.",
    "Make sure that the number of active sessions is less than or equal to the threshold limit.",
    "Informational",
)
SYS518 = _ext(
    "IDRAC.2.9.SYS518",
    "iDRAC is currently unable to display any information because data sources are unavailable.",
    "Wait for the data to be available and retry the operation. If the issue persists, contact "
    "your service provider.",
    "Informational",
)
SWC0700 = _ext(
    "IDRAC.2.9.SWC0700",
    "iDRAC is not ready. The configuration values cannot be accessed. Please retry after a few minutes.",
    "Retry the operation after a few minutes.",
    "Informational",
)
# AUTH401: a 401 although the session is still open (iDRAC does this under load): the session
# then stays open on the BMC unless the client deletes it before logging in again.
FAULTS = {"SYS518": (503, SYS518), "SWC0700": (400, SWC0700), "AUTH401": (401, ACCESS_DENIED)}


def _health_of(items: list[str]) -> str:
    return max(items, key=lambda h: HEALTH_ORDER.get(h, 2), default="OK")


@dataclass
class Stats:
    requests: int = 0
    sessions_created: int = 0
    sessions_deleted: int = 0
    max_sessions_open: int = 0
    session_limit_rejections: int = 0
    basic_auth_requests: int = 0
    auth_failures: int = 0
    faults_served: int = 0
    resets: list[str] = field(default_factory=list)
    power_changes: list[str] = field(default_factory=list)  # every PowerState reached, in order
    reboots: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every Redfish request
    session_ids: list[str] = field(default_factory=list)  # ids of the sessions created, in order


class SimBMC:
    """One simulated iDRAC: state, faults and counters. Every mutation holds `lock`."""

    def __init__(
        self,
        index: int,
        *,
        username: str = "root",
        password: str | None = None,
        power_state: str = "On",
        power_delay: float = 2.0,
        session_limit: int = 8,
        session_timeout: float = 1800.0,
        basic_auth: bool = True,
        sessions_supported: bool = True,
        restart_markers: bool = True,
    ) -> None:
        self.index = index
        self.username = username
        self.password = password or f"sim-{secrets.token_hex(6)}"
        self.service_tag = f"SIM{index:04d}"
        self.power_delay = power_delay
        self.session_limit = session_limit
        self.session_timeout = session_timeout
        self.basic_auth = basic_auth
        self.sessions_supported = sessions_supported
        self.os_responsive = True  # False: GracefulShutdown/GracefulRestart are ignored (hung OS)
        # LastResetTime and BootProgress on the system, as iDRAC9 firmware does since about 4.x;
        # False: an older BMC that exposes neither (a restart then cannot be verified).
        self.restart_markers = restart_markers
        self.latency = 0.0
        self.lock = threading.RLock()
        self.stats = Stats()
        self.sessions: dict[str, dict[str, Any]] = {}  # token -> {"id", "user", "seen"}
        self._power = power_state
        self._transition: tuple[float, str, str | None] | None = None  # (at, state, then)
        self._warm_boot_at: float | None = None  # a warm reset (PowerState stays On) completes then
        booted = time.time() - 86400.0  # up for a day when the simulator starts
        self.last_reset_time = _iso(booted)
        self.boot_progress = {"LastState": "OSRunning" if power_state == "On" else "None"}
        self.boot_progress_time = _iso(booted)
        self._faults: list[str] = []
        self._reboot_after: tuple[int, float] | None = None
        self.health: dict[str, str] = {
            "Fan.Embedded.1A": "OK",
            "Fan.Embedded.2A": "OK",
            "System Board Inlet Temp": "OK",
            "CPU1 Temp": "OK",
            "PSU.Slot.1": "OK",
            "PSU.Slot.2": "OK",
            "RAID.Integrated.1-1": "OK",
        }
        self.port = 0
        self.server: _BMCServer | None = None
        self.down_until = 0.0
        self._stopped = False
        self._tls: ssl.SSLContext | None = None
        self.inventory = SimInventory(self.service_tag)  # firmware, BIOS attributes, logs (read-only)

    # ---- addresses ---------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        return {"address": self.address, "username": self.username, "password": self.password}

    # ---- control API for tests ---------------------------------------------------------
    def set_power(self, state: str) -> None:
        with self.lock:
            self._power, self._transition, self._warm_boot_at = state, None, None

    def power_state(self) -> str:
        with self.lock:
            self._settle()
            return self._power

    def set_health(self, component: str, health: str) -> None:
        """Component ids: Fan.Embedded.1A/2A, 'System Board Inlet Temp', 'CPU1 Temp',
        PSU.Slot.1/2, RAID.Integrated.1-1."""
        with self.lock:
            if component not in self.health:
                raise KeyError(component)
            self.health[component] = health

    def inject(self, code: str, count: int = 1) -> None:
        """Answer the next `count` Redfish requests with SYS518 (503), SWC0700 (400) or AUTH401
        (401 while the session stays open)."""
        if code not in FAULTS:
            raise ValueError(code)
        with self.lock:
            self._faults.extend([code] * count)

    def reboot_after(self, requests: int, down_seconds: float) -> None:
        """After `requests` more Redfish requests, the iDRAC reboots (see reboot())."""
        with self.lock:
            self._reboot_after = (requests, down_seconds)

    def reboot(self, down_seconds: float) -> None:
        """iDRAC reset: listener closed (connection refused), sessions dropped, back later."""
        with self.lock:
            self.sessions.clear()
            self.stats.reboots += 1
            self.down_until = time.monotonic() + down_seconds
            server, self.server = self.server, None
        if server is not None:
            threading.Thread(target=_stop_server, args=(server,), daemon=True).start()
        timer = threading.Timer(down_seconds, self._come_back)
        timer.daemon = True
        timer.start()

    def _come_back(self) -> None:
        for _ in range(50):  # the port may linger briefly in the old socket
            if self._stopped:  # the fleet was stopped while this BMC was down: stay down
                return
            try:
                self.serve(self._tls, port=self.port)
                return
            except OSError:
                time.sleep(0.1)

    def counters(self) -> dict[str, Any]:
        with self.lock:
            self._expire_sessions()
            s = self.stats
            return {
                "address": self.address,
                "requests": s.requests,
                "sessions_open": len(self.sessions),
                "max_sessions_open": s.max_sessions_open,
                "sessions_created": s.sessions_created,
                "sessions_deleted": s.sessions_deleted,
                "session_limit_rejections": s.session_limit_rejections,
                "basic_auth_requests": s.basic_auth_requests,
                "auth_failures": s.auth_failures,
                "faults_served": s.faults_served,
                "resets": list(s.resets),
                "power_changes": list(s.power_changes),
                "reboots": s.reboots,
                "methods": dict(collections.Counter(m for m, _ in s.calls)),
                "power_state": self.power_state(),
                "last_reset_time": self.last_reset_time,
                "boot_progress": self.boot_progress["LastState"],
            }

    # ---- serving -----------------------------------------------------------------------
    def serve(self, tls: ssl.SSLContext | None, port: int = 0) -> None:
        server = _BMCServer(("127.0.0.1", port), _Handler, self, tls)
        self._tls = tls
        self.port = server.server_address[1]
        with self.lock:
            self.server = server
            self.down_until = 0.0
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    def stop(self) -> None:
        with self.lock:
            self._stopped = True
            server, self.server = self.server, None
        if server is not None:
            _stop_server(server)

    # ---- state machine (called with lock held) -----------------------------------------
    def _settle(self) -> None:
        now = time.monotonic()
        while self._transition and now >= self._transition[0]:
            at, state, then = self._transition
            if state == "On" and self._power != "On":
                self._boot(at, started=True)  # a cold boot is a reset too
            elif state == "Off":
                self._set_boot_state("None", at)
            self._power = state
            self.stats.power_changes.append(state)
            self._transition = (at + self.power_delay, then, None) if then else None
        if self._warm_boot_at is not None and now >= self._warm_boot_at:
            self._boot(self._warm_boot_at, started=False)
            self._warm_boot_at = None

    def _set_boot_state(self, state: str, at: float) -> None:
        self.boot_progress = {"LastState": state}
        self.boot_progress_time = _iso(time.time() - (time.monotonic() - at))

    def _boot(self, at: float, *, started: bool) -> None:
        """The host finished booting at monotonic time `at` (started: the reset began then too)."""
        if started:
            self.last_reset_time = _iso(time.time() - (time.monotonic() - at))
        self._set_boot_state("OSRunning", at)

    def _warm_reset(self) -> None:
        """ForceRestart/GracefulRestart on a Dell: the host reboots, PowerState stays On; only
        LastResetTime and BootProgress show it (POST, then the OS again after power_delay)."""
        now = time.monotonic()
        self.last_reset_time = _iso(time.time())
        self._set_boot_state("PrimaryProcessorInitializationStarted", now)
        self._warm_boot_at = now + self.power_delay

    def _start(self, state: str, then: str | None = None, delay: float | None = None) -> None:
        self._transition = (time.monotonic() + (self.power_delay if delay is None else delay), state, then)

    def reset(self, reset_type: str) -> tuple[int, dict[str, Any] | None]:
        with self.lock:
            self._settle()
            on = self._power == "On"
            if reset_type not in RESET_TYPES:
                return 400, error_body(
                    _ext(
                        "Base.1.12.PropertyValueNotInList",
                        f"The value {reset_type} for the property ResetType is not in the list of "
                        "acceptable values.",
                        "Choose a value from the enumeration list that the implementation can support "
                        "and resubmit the request if the operation failed.",
                        "Warning",
                    )
                )
            if reset_type == "On" and on:
                return 409, error_body(
                    _ext(
                        "IDRAC.2.9.PSU501",
                        "Server is already powered ON.",
                        "No response action is required.",
                        "Informational",
                    )
                )
            if reset_type in ("ForceOff", "GracefulShutdown") and not on:
                return 409, error_body(
                    _ext(
                        "IDRAC.2.9.PSU502",
                        "Server is already powered OFF.",
                        "No response action is required.",
                        "Informational",
                    )
                )
            if reset_type in ("ForceRestart", "GracefulRestart", "PowerCycle") and not on:
                return 409, error_body(
                    _ext(
                        "IDRAC.2.9.PSU503",
                        "Unable to perform the operation because the server is powered off.",
                        "Turn on the server and retry the operation.",
                        "Warning",
                    )
                )
            self.stats.resets.append(reset_type)
            if reset_type == "On":
                self._start("On")
            elif reset_type == "ForceOff":
                self._start("Off", delay=min(self.power_delay, 0.5))
            elif reset_type == "GracefulShutdown" or (reset_type == "PushPowerButton" and on):
                if self.os_responsive:
                    self._start("Off")
            elif reset_type == "PushPowerButton":
                self._start("On")
            elif reset_type in ("ForceRestart", "GracefulRestart"):
                if reset_type == "GracefulRestart" and not self.os_responsive:
                    return 204, None  # accepted, and ignored by the hung OS
                self._warm_reset()
            elif reset_type == "PowerCycle":
                self._start("Off", then="On", delay=min(self.power_delay, 0.5))
            return 204, None

    # ---- sessions (lock held) ----------------------------------------------------------
    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for tok in [t for t, s in self.sessions.items() if now - s["seen"] > self.session_timeout]:
            del self.sessions[tok]

    def login(self, user: str, password: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            self._expire_sessions()
            if user != self.username or password != self.password:
                self.stats.auth_failures += 1
                return 401, error_body(ACCESS_DENIED), {}
            if len(self.sessions) >= self.session_limit:
                self.stats.session_limit_rejections += 1
                return 503, error_body(RAC0218), {}
            sid = str(self.stats.sessions_created + 1)
            token = secrets.token_hex(16)
            self.sessions[token] = {"id": sid, "user": user, "seen": time.monotonic()}
            self.stats.sessions_created += 1
            self.stats.session_ids.append(sid)
            self.stats.max_sessions_open = max(self.stats.max_sessions_open, len(self.sessions))
            body = {
                "@odata.id": f"{SESSIONS}/{sid}",
                "@odata.type": "#Session.v1_6_0.Session",
                "Id": sid,
                "Name": "User Session",
                "UserName": user,
                "SessionType": "Redfish",
            }
            return 201, body, {"X-Auth-Token": token, "Location": f"{SESSIONS}/{sid}"}

    def authorize(self, headers: Any) -> bool:
        with self.lock:
            self._expire_sessions()
            token = headers.get("X-Auth-Token")
            if token:
                sess = self.sessions.get(token)
                if sess:
                    sess["seen"] = time.monotonic()
                    return True
                self.stats.auth_failures += 1
                return False
            auth = headers.get("Authorization") or ""
            if auth.startswith("Basic ") and self.basic_auth:
                try:
                    user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                except ValueError:
                    user, pw = "", ""
                if user == self.username and pw == self.password:
                    self.stats.basic_auth_requests += 1
                    return True
            self.stats.auth_failures += 1
            return False

    def logout(self, headers: Any, sid: str) -> int:
        with self.lock:
            if not self.authorize(headers):
                return 401
            for tok, s in list(self.sessions.items()):
                if s["id"] == sid:
                    del self.sessions[tok]
                    self.stats.sessions_deleted += 1
                    return 200
            return 404

    def writes(self) -> list[tuple[str, str]]:
        """Every Redfish request that was not a GET, (method, path) in order."""
        with self.lock:
            return [c for c in self.stats.calls if c[0] != "GET"]

    def next_fault(self, method: str = "GET", path: str = "") -> tuple[int, dict[str, Any]] | None:
        """Per-request faults, counted before routing (lock taken here)."""
        reboot = None
        with self.lock:
            self.stats.requests += 1
            self.stats.calls.append((method, path))
            if self._reboot_after is not None:
                left, down = self._reboot_after
                self._reboot_after = (left - 1, down) if left > 1 else None
                if left <= 1:
                    reboot = down
            if reboot is None and self._faults:
                status, info = FAULTS[self._faults.pop(0)]
                self.stats.faults_served += 1
                return status, error_body(info)
        if reboot is not None:
            self.reboot(reboot)
            return -1, {}
        return None

    # ---- resources (lock held by the caller through resource()) -------------------------
    def resource(self, path: str, query: str = "") -> dict[str, Any] | None:
        with self.lock:
            self._settle()
            return _inventory_resource(self, path, query) or _resources(self, path)


def _iso(epoch: float) -> str:
    """Dell's timestamp shape: seconds and a UTC offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))


def _member(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def _collection(path: str, kind: str, members: list[str]) -> dict[str, Any]:
    return {
        "@odata.id": path,
        "@odata.type": f"#{kind}Collection.{kind}Collection",
        "Name": f"{kind} Collection",
        "Members": [_member(m) for m in members],
        "Members@odata.count": len(members),
    }


def _status(health: str, rollup: str | None = None) -> dict[str, str]:
    st = {"State": "Enabled", "Health": health}
    if rollup is not None:
        st["HealthRollup"] = rollup
    return st


def _resources(b: SimBMC, path: str) -> dict[str, Any] | None:
    h = b.health
    rollup = _health_of(list(h.values()))
    if path == f"{ROOT}/Systems":
        return _collection(path, "ComputerSystem", [SYSTEM])
    if path == f"{ROOT}/Managers":
        return _collection(path, "Manager", [MANAGER])
    if path == f"{ROOT}/Chassis":
        return _collection(path, "Chassis", [CHASSIS])
    if path == f"{ROOT}/SessionService":
        return {
            "@odata.id": path,
            "@odata.type": "#SessionService.v1_1_8.SessionService",
            "Id": "SessionService",
            "ServiceEnabled": True,
            "SessionTimeout": int(b.session_timeout),
            "Sessions": _member(SESSIONS),
        }
    if path == SESSIONS:
        return _collection(path, "Session", [f"{SESSIONS}/{s['id']}" for s in b.sessions.values()])
    if path == SYSTEM:
        return {
            "@odata.id": SYSTEM,
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": SYSTEM_ID,
            "Name": "System",
            "Manufacturer": "Dell Inc.",
            "Model": "PowerEdge R750",
            "SKU": b.service_tag,
            "SerialNumber": f"CN{b.index:010d}",
            "HostName": f"sim-host-{b.index:04d}",
            "BiosVersion": "1.13.2",
            "PowerState": b._power,
            **(
                {
                    "LastResetTime": b.last_reset_time,
                    "BootProgress": {**b.boot_progress, "LastStateTime": b.boot_progress_time},
                }
                if b.restart_markers
                else {}
            ),
            "Status": _status(rollup, rollup),
            "ProcessorSummary": {
                "Count": 2,
                "Model": "Intel(R) Xeon(R) Gold 6338",
                "Status": _status("OK", "OK"),
            },
            "MemorySummary": {"TotalSystemMemoryGiB": 256, "Status": _status("OK", "OK")},
            "Storage": _member(f"{SYSTEM}/Storage"),
            "Bios": _member(BIOS),
            "Links": {"Chassis": [_member(CHASSIS)], "ManagedBy": [_member(MANAGER)]},
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": f"{SYSTEM}/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": RESET_TYPES,
                }
            },
        }
    if path == f"{SYSTEM}/Storage":
        return _collection(path, "Storage", [f"{SYSTEM}/Storage/RAID.Integrated.1-1"])
    if path == f"{SYSTEM}/Storage/RAID.Integrated.1-1":
        ctl = h["RAID.Integrated.1-1"]
        return {
            "@odata.id": path,
            "@odata.type": "#Storage.v1_13_0.Storage",
            "Id": "RAID.Integrated.1-1",
            "Name": "PERC H755 Front",
            "Status": _status(ctl, ctl),
            "StorageControllers": [
                {"MemberId": "RAID.Integrated.1-1", "Name": "PERC H755 Front", "Status": _status(ctl)}
            ],
        }
    if path == MANAGER:
        return {
            "@odata.id": MANAGER,
            "@odata.type": "#Manager.v1_17_0.Manager",
            "Id": MANAGER_ID,
            "Name": "Manager",
            "ManagerType": "BMC",
            "Model": "16G Monolithic",
            "FirmwareVersion": FIRMWARE,
            "Status": _status("OK"),
            "LogServices": _member(LOG_SERVICES),
            "Actions": {
                "#Manager.Reset": {
                    "target": f"{MANAGER}/Actions/Manager.Reset",
                    "ResetType@Redfish.AllowableValues": ["GracefulRestart"],
                }
            },
        }
    if path == CHASSIS:
        return {
            "@odata.id": CHASSIS,
            "@odata.type": "#Chassis.v1_21_0.Chassis",
            "Id": SYSTEM_ID,
            "Name": "Computer System Chassis",
            "ChassisType": "RackMount",
            "PowerState": b._power,
            "Status": _status(rollup, rollup),
            "Thermal": _member(f"{CHASSIS}/Thermal"),
            "Power": _member(f"{CHASSIS}/Power"),
            "Links": {"ComputerSystems": [_member(SYSTEM)], "ManagedBy": [_member(MANAGER)]},
        }
    if path == f"{CHASSIS}/Thermal":
        fans = [k for k in h if k.startswith("Fan.")]
        temps = [k for k in h if k.endswith("Temp")]
        return {
            "@odata.id": path,
            "@odata.type": "#Thermal.v1_7_0.Thermal",
            "Id": "Thermal",
            "Name": "Thermal",
            "Fans": [
                {
                    "@odata.id": f"{path}#/Fans/{i}",
                    "MemberId": f"0x17||{k}",
                    "Name": f"System Board Fan{k[-2:]}",
                    "Reading": 7440 if h[k] == "OK" else 0,
                    "ReadingUnits": "RPM",
                    "Status": _status(h[k]),
                }
                for i, k in enumerate(fans)
            ],
            "Temperatures": [
                {
                    "@odata.id": f"{path}#/Temperatures/{i}",
                    "MemberId": f"iDRAC.Embedded.1#{k.replace(' ', '')}",
                    "Name": k,
                    "ReadingCelsius": 24 if h[k] == "OK" else 91,
                    "Status": _status(h[k]),
                }
                for i, k in enumerate(temps)
            ],
        }
    if path == f"{CHASSIS}/Power":
        psus = [k for k in h if k.startswith("PSU.")]
        return {
            "@odata.id": path,
            "@odata.type": "#Power.v1_7_1.Power",
            "Id": "Power",
            "Name": "Power",
            "PowerControl": [
                {"MemberId": "PowerControl", "PowerConsumedWatts": 312 if b._power == "On" else 14}
            ],
            "PowerSupplies": [
                {
                    "@odata.id": f"{path}#/PowerSupplies/{i}",
                    "MemberId": k,
                    "Name": f"PS{k[-1]} Status",
                    "Status": _status(h[k]),
                }
                for i, k in enumerate(psus)
            ],
        }
    return None


def service_root(b: SimBMC) -> dict[str, Any]:
    root: dict[str, Any] = {
        "@odata.id": f"{ROOT}/",
        "@odata.type": "#ServiceRoot.v1_16_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Root Service",
        "Product": "Integrated Dell Remote Access Controller",
        "Vendor": "Dell",
        "RedfishVersion": "1.19.0",
        "Systems": _member(f"{ROOT}/Systems"),
        "Managers": _member(f"{ROOT}/Managers"),
        "UpdateService": _member(UPDATE_SERVICE),
        "Registries": _member(REGISTRIES),
        "Chassis": _member(f"{ROOT}/Chassis"),
        "Links": {"Sessions": _member(SESSIONS)},
        "Oem": {"Dell": {"ServiceTag": b.service_tag, "IsBranded": 0}},
    }
    if b.sessions_supported:
        root["SessionService"] = _member(f"{ROOT}/SessionService")
    else:
        root["RedfishVersion"] = "1.0.2"
        del root["Links"]
    return root


# ---- read-only inventory: firmware inventory, BIOS attributes, SEL and Lifecycle log --------
# Dell's shapes: FirmwareInventory members named <State>-<SoftwareId>-<Version>[__<FQDD>] (Installed
# and Previous), Bios.Attributes with the AttributeRegistry name, the registry's RegistryEntries
# typing password attributes "Password", LogServices Sel and Lclog whose Entries are inline LogEntry
# members, newest first, paged with Members@odata.nextLink (`?$skip=N`).
UPDATE_SERVICE = f"{ROOT}/UpdateService"
FIRMWARE_INVENTORY = f"{UPDATE_SERVICE}/FirmwareInventory"
BIOS = f"{SYSTEM}/Bios"
BIOS_REGISTRY = "BiosAttributeRegistry.v1_0_3"
REGISTRIES = f"{ROOT}/Registries"
LOG_SERVICES = f"{MANAGER}/LogServices"
LOG_IDS = {"Sel": "SEL", "Lclog": "Event"}  # LogService id -> EntryType of its entries


@dataclass
class SimInventory:
    """What the read-only jobs read. Tests change the fields directly (in process)."""

    service_tag: str
    firmware: list[dict[str, Any]] = field(default_factory=list)
    bios_attributes: dict[str, Any] = field(default_factory=dict)
    password_attributes: set[str] = field(default_factory=set)  # typed Password in the registry
    # oldest first, served reversed; delete a key to drop that log service
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    log_page_size: int = 50
    pages_served: int = 0
    registry_readable: bool = True  # False: the BIOS attribute registry answers 404
    firmware_next_link: str | None = None  # set: the firmware collection links to it (any host)

    def __post_init__(self) -> None:
        bios = "1.13.2"
        self.firmware = [
            _fw("Installed", "25227", FIRMWARE, "Integrated Dell Remote Access Controller"),
            _fw("Installed", "159", bios, "BIOS"),
            _fw("Previous", "159", "1.12.0", "BIOS"),
            _fw("Installed", "28897", FIRMWARE, "Lifecycle Controller", updateable=False),
            _fw("Installed", "110637", "52.26.0-5179", "PERC H755 Front", fqdd="RAID.Integrated.1-1"),
            _fw(
                "Installed",
                "104473",
                "22.31.6",
                "Broadcom Gigabit Ethernet BCM5720",
                fqdd="NIC.Embedded.1-1-1",
            ),
        ]
        self.bios_attributes = {
            "BootMode": "Uefi",
            "SysProfile": "PerfOptimized",
            "LogicalProc": "Enabled",
            "ProcVirtualization": "Enabled",
            "MemOpMode": "OptimizerMode",
            "SystemServiceTag": self.service_tag,
            "PasswordStatus": "Unlocked",
            "SysPassword": None,  # iDRAC answers null for the password attributes
            "SetupPassword": None,
            "IscsiDev1Con1ChapSecret": "sim-chap-secret-1",
        }
        self.password_attributes = {"SysPassword", "SetupPassword", "IscsiDev1Con1ChapSecret"}
        self.set_log("Sel", 3)
        self.set_log("Lclog", 5)

    def set_log(self, service: str, count: int, message: str | None = None) -> None:
        """Replace a log with `count` entries, one a minute, the last one newest."""
        start = time.time() - 60.0 * count
        kind = LOG_IDS[service]
        self.logs[service] = [
            {
                "@odata.id": f"{LOG_SERVICES}/{service}/Entries/{i}",
                "@odata.type": "#LogEntry.v1_15_0.LogEntry",
                "Id": str(i),
                "Name": f"Log Entry {i}",
                "Created": _iso(start + 60.0 * i),
                "EntryType": kind,
                "Severity": "Warning" if i % 10 == 0 else "OK",
                "Message": message or f"{service} entry {i}",
                "MessageId": "IDRAC.2.9.PSU0003" if kind == "SEL" else "IDRAC.2.9.USR0030",
                "MessageArgs": [],
            }
            for i in range(1, count + 1)
        ]


def _fw(
    state: str, sw_id: str, version: str, name: str, *, updateable: bool = True, fqdd: str = ""
) -> dict[str, Any]:
    ident = f"{state}-{sw_id}-{version}" + (f"__{fqdd}" if fqdd else "")
    return {
        "@odata.id": f"{FIRMWARE_INVENTORY}/{ident}",
        "@odata.type": "#SoftwareInventory.v1_10_0.SoftwareInventory",
        "Id": ident,
        "Name": name,
        "Version": version,
        "Updateable": updateable,
        "SoftwareId": sw_id,
        "Status": {"Health": "OK", "State": "Enabled" if state == "Installed" else "Disabled"},
    }


def _skip(query: str) -> int:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key in ("$skip", "%24skip"):
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


def _inventory_resource(b: SimBMC, path: str, query: str) -> dict[str, Any] | None:
    inv = b.inventory
    if path == UPDATE_SERVICE:
        return {
            "@odata.id": path,
            "@odata.type": "#UpdateService.v1_11_0.UpdateService",
            "Id": "UpdateService",
            "ServiceEnabled": True,
            "FirmwareInventory": _member(FIRMWARE_INVENTORY),
        }
    if path == FIRMWARE_INVENTORY:
        coll = _collection(path, "SoftwareInventory", [f["@odata.id"] for f in inv.firmware])
        if inv.firmware_next_link:
            coll["Members@odata.nextLink"] = inv.firmware_next_link
        return coll
    if path.startswith(FIRMWARE_INVENTORY + "/"):
        return next((dict(f) for f in inv.firmware if f["@odata.id"] == path), None)
    if path == BIOS:
        return {
            "@odata.id": path,
            "@odata.type": "#Bios.v1_2_1.Bios",
            "Id": "Bios",
            "Name": "BIOS Configuration Current Settings",
            "AttributeRegistry": BIOS_REGISTRY,
            "Attributes": dict(inv.bios_attributes),
            "@Redfish.Settings": {"SettingsObject": _member(f"{BIOS}/Settings")},
        }
    if path == REGISTRIES:
        return _collection(path, "MessageRegistryFile", [f"{REGISTRIES}/BiosAttributeRegistry"])
    if path == f"{REGISTRIES}/BiosAttributeRegistry":
        return {
            "@odata.id": path,
            "@odata.type": "#MessageRegistryFile.v1_1_3.MessageRegistryFile",
            "Id": "BiosAttributeRegistry",
            "Registry": BIOS_REGISTRY,
            "Location": [{"Language": "en", "Uri": f"{path}/{BIOS_REGISTRY}"}],
        }
    if path == f"{REGISTRIES}/BiosAttributeRegistry/{BIOS_REGISTRY}" and inv.registry_readable:
        return {
            "@odata.id": path,
            "@odata.type": "#AttributeRegistry.v1_3_6.AttributeRegistry",
            "Id": BIOS_REGISTRY,
            "RegistryEntries": {
                "Attributes": [
                    {
                        "AttributeName": name,
                        "Type": "Password" if name in inv.password_attributes else "String",
                        "ReadOnly": False,
                    }
                    for name in inv.bios_attributes
                ]
            },
        }
    if path == LOG_SERVICES:
        # a service missing from inv.logs is not offered (e.g. a BMC without a Lifecycle log)
        return _collection(path, "LogService", [f"{LOG_SERVICES}/{s}" for s in LOG_IDS if s in inv.logs])
    for service in (s for s in LOG_IDS if s in inv.logs):
        base = f"{LOG_SERVICES}/{service}"
        if path == base:
            return {
                "@odata.id": base,
                "@odata.type": "#LogService.v1_3_0.LogService",
                "Id": service,
                "Name": "SEL Log Service" if service == "Sel" else "LC Log Service",
                "ServiceEnabled": True,
                "Entries": _member(f"{base}/Entries"),
            }
        if path == f"{base}/Entries":
            return _log_page(inv, base, service, _skip(query))
    return None


def _log_page(inv: SimInventory, base: str, service: str, skip: int) -> dict[str, Any]:
    entries = inv.logs.get(service, [])[::-1]  # iDRAC lists the newest entry first
    page = entries[skip : skip + inv.log_page_size]
    inv.pages_served += 1
    body: dict[str, Any] = {
        "@odata.id": f"{base}/Entries",
        "@odata.type": "#LogEntryCollection.LogEntryCollection",
        "Name": "Log Entry Collection",
        "Members": page,
        "Members@odata.count": len(entries),
    }
    if skip + inv.log_page_size < len(entries):
        body["Members@odata.nextLink"] = f"{base}/Entries?$skip={skip + inv.log_page_size}"
    return body


class _BMCServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], handler: type, bmc: SimBMC, tls: ssl.SSLContext | None) -> None:
        self.bmc = bmc
        super().__init__(addr, handler)
        if tls is not None:
            # Handshake lazily in the handler thread, so a stalled client never blocks accept().
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # TLS refusals and dropped connections are expected in the lab


def _stop_server(server: _BMCServer) -> None:
    server.shutdown()
    server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _BMCServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def bmc(self) -> SimBMC:
        return self.server.bmc

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json;odata.metadata=minimal;charset=utf-8")
        self.send_header("OData-Version", "4.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            val = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return val if isinstance(val, dict) else {}

    def _stale(self) -> bool:
        """A keep-alive connection that outlived a reboot: drop it, as the real reset does."""
        if self.bmc.server is self.server:
            return False
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def _pre(self) -> bool:
        """Latency, injected faults and scheduled reboots. False when already answered."""
        b = self.bmc
        if b.latency:
            time.sleep(b.latency)
        fault = b.next_fault(self.command, self._path())
        if fault is None:
            return True
        if fault[0] == -1:  # rebooting now: drop the connection unanswered
            self._stale()
            return False
        self._send(*fault)
        return False

    def _path(self) -> str:
        p = self.path.split("?", 1)[0]
        return p[:-1] if len(p) > 1 and p.endswith("/") else p

    def do_GET(self) -> None:
        if self._stale():
            return None
        path = self._path()
        if path.startswith("/lab/"):
            return self._lab_get(path)
        if path == "/redfish":
            return self._send(200, {"v1": f"{ROOT}/"})
        if not self._pre():
            return None
        if path == ROOT:
            return self._send(200, service_root(self.bmc))
        if not self.bmc.authorize(self.headers):
            return self._send(
                401, error_body(ACCESS_DENIED), {"WWW-Authenticate": 'Basic realm="RedfishService"'}
            )
        res = self.bmc.resource(path, self.path.partition("?")[2])
        if res is None:
            return self._not_found(path)
        return self._send(200, res)

    def do_POST(self) -> None:
        if self._stale():
            return None
        path = self._path()
        if path.startswith("/lab/"):
            return self._lab_post(path)
        if not self._pre():
            return None
        b = self.bmc
        if path in (SESSIONS, f"{ROOT}/Sessions"):
            body = self._body()
            if not b.sessions_supported:
                return self._send(
                    405,
                    error_body(
                        _ext(
                            "Base.1.12.OperationNotAllowed",
                            "The HTTP method is not allowed on this URI.",
                            "None.",
                        )
                    ),
                )
            status, resp, headers = b.login(str(body.get("UserName", "")), str(body.get("Password", "")))
            return self._send(status, resp, headers)
        if not b.authorize(self.headers):
            return self._send(401, error_body(ACCESS_DENIED))
        if path == f"{SYSTEM}/Actions/ComputerSystem.Reset":
            status, resp = b.reset(str(self._body().get("ResetType", "")))
            return self._send(status, resp)
        return self._not_found(path)

    def do_DELETE(self) -> None:
        if self._stale():
            return None
        path = self._path()
        if not self._pre():
            return None
        if path.startswith(SESSIONS + "/"):
            status = self.bmc.logout(self.headers, path.rsplit("/", 1)[1])
            if status == 200:
                ok = _ext("Base.1.12.Success", "Successfully Completed Request", "None", "OK")
                return self._send(200, {"@Message.ExtendedInfo": [ok]})
            if status == 401:
                return self._send(401, error_body(ACCESS_DENIED))
            return self._not_found(path)
        return self._send(
            405,
            error_body(
                _ext("Base.1.12.OperationNotAllowed", "The HTTP method is not allowed on this URI.", "None.")
            ),
        )

    def do_PATCH(self) -> None:
        self.do_DELETE()

    def _not_found(self, path: str) -> None:
        self._send(
            404,
            error_body(
                _ext(
                    "Base.1.12.ResourceMissingAtURI",
                    f"The resource at the URI {path} was not found.",
                    "Place a valid resource at the URI or correct the URI and resubmit the request.",
                )
            ),
        )

    # ---- lab-only endpoints (never part of a real iDRAC) -------------------------------
    def _lab_get(self, path: str) -> None:
        if path == "/lab/stats":
            return self._send(200, self.bmc.counters())
        return self._send(404, {"error": "unknown lab endpoint"})

    def _lab_post(self, path: str) -> None:
        if path != "/lab/control":
            return self._send(404, {"error": "unknown lab endpoint"})
        try:
            apply_control(self.bmc, self._body())
        except (KeyError, ValueError) as exc:
            return self._send(400, {"error": f"bad control: {exc}"})
        return self._send(200, self.bmc.counters())


def apply_control(b: SimBMC, cmd: dict[str, Any]) -> None:
    """The control verbs shared by the in-process API and POST /lab/control."""
    if "power_state" in cmd:
        b.set_power(str(cmd["power_state"]))
    if "power_delay" in cmd:
        b.power_delay = float(cmd["power_delay"])
    if "latency" in cmd:
        b.latency = float(cmd["latency"])
    if "basic_auth" in cmd:
        b.basic_auth = bool(cmd["basic_auth"])
    if "os_responsive" in cmd:
        b.os_responsive = bool(cmd["os_responsive"])
    if "restart_markers" in cmd:
        b.restart_markers = bool(cmd["restart_markers"])
    if "password" in cmd:
        b.password = str(cmd["password"])
    if "session_limit" in cmd:
        b.session_limit = int(cmd["session_limit"])
    for comp, health in (cmd.get("health") or {}).items():
        b.set_health(comp, health)
    for code, count in (cmd.get("faults") or {}).items():
        b.inject(code, int(count))
    if "reboot" in cmd:
        b.reboot(float(cmd["reboot"]))


class IdracFleet:
    """Many simulated iDRACs. Context manager; `stop()` closes every listener."""

    def __init__(self, servers: int = 1, *, tls: bool = False, **bmc_options: Any) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="idrac-sim-")
        self.tls = tls
        self.ca_file: str | None = None
        ctx = None
        if tls:
            files = make_tls(Path(self._tmp.name), name="idrac-sim")
            ctx, self.ca_file = files.server_context(), str(files.ca_file)
        self.bmcs: list[SimBMC] = []
        self._ctx = ctx
        self._options = bmc_options
        self.add(servers)

    def add(self, count: int, **overrides: Any) -> list[SimBMC]:
        """Start `count` more BMCs (options default to the fleet's)."""
        new = []
        for _ in range(count):
            b = SimBMC(len(self.bmcs) + 1, **{**self._options, **overrides})
            b.serve(self._ctx)
            self.bmcs.append(b)
            new.append(b)
        return new

    def __getitem__(self, i: int) -> SimBMC:
        return self.bmcs[i]

    def __len__(self) -> int:
        return len(self.bmcs)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.bmcs)

    def __enter__(self) -> IdracFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def by_address(self, address: str) -> SimBMC:
        return next(b for b in self.bmcs if b.address == address)

    def sessions_open(self) -> dict[str, int]:
        """Address -> sessions open right now (for leak checks at the end of a test)."""
        return {b.address: b.counters()["sessions_open"] for b in self.bmcs}

    def max_sessions_ever(self) -> int:
        return max((b.stats.max_sessions_open for b in self.bmcs), default=0)

    def stats(self) -> list[dict[str, Any]]:
        return [b.counters() for b in self.bmcs]

    def describe(self) -> dict[str, Any]:
        return {
            "servers": [b.info() for b in self.bmcs],
            "scheme": "https" if self.tls else "http",
            "ca_file": self.ca_file,
        }

    def stop(self) -> None:
        """Stop every listener at once: each shutdown waits up to one poll interval (0.2 s) for
        its serve loop, so stopping 100 BMCs one after another took 20 s."""
        threads = [threading.Thread(target=b.stop, daemon=True) for b in self.bmcs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        self._tmp.cleanup()


class _ControlHandler(BaseHTTPRequestHandler):
    """Fleet-wide lab endpoint for subprocess users: GET /stats."""

    protocol_version = "HTTP/1.1"
    fleet: IdracFleet

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fleet = self.server.fleet  # type: ignore[attr-defined]
        body = json.dumps({"servers": fleet.stats(), "max_sessions_ever": fleet.max_sessions_ever()}).encode()
        self.send_response(200 if self.path.startswith("/stats") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.idrac_sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=1)
    ap.add_argument("--tls", action="store_true", help="serve HTTPS with a generated CA (see ca_file)")
    ap.add_argument("--power-delay", type=float, default=2.0, help="seconds a power change takes")
    ap.add_argument("--session-limit", type=int, default=8)
    ap.add_argument("--no-basic-auth", action="store_true", help="refuse HTTP Basic (as iDRAC10 ships)")
    ap.add_argument("--username", default="root")
    ap.add_argument("--password", default=None, help="one password for all (default: random per BMC)")
    args = ap.parse_args(argv)
    fleet = IdracFleet(
        args.servers,
        tls=args.tls,
        power_delay=args.power_delay,
        session_limit=args.session_limit,
        basic_auth=not args.no_basic_auth,
        username=args.username,
        password=args.password,
    )
    ctl = ThreadingHTTPServer(("127.0.0.1", 0), _ControlHandler)
    ctl.daemon_threads = True
    ctl.fleet = fleet  # type: ignore[attr-defined]
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    out = fleet.describe()
    out["control_url"] = f"http://127.0.0.1:{ctl.server_address[1]}/stats"
    print(json.dumps(out), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    ctl.shutdown()
    fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
