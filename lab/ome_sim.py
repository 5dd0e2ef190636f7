"""A stand-in for Dell OpenManage Enterprise (OME) REST API, for tests, benchmarks and the demo.

Faithful to what real appliances answer (shapes taken from Dell's API guide and the payloads in
dell/OpenManage-Enterprise and dellemc-openmanage-ansible-modules), including their traps:

- sessions: POST /api/SessionService/Sessions -> 201, token in X-Auth-Token, Id in the body;
  DELETE /api/SessionService/Sessions('<Id>') -> 204; at most 100 open sessions per user (CURS1209);
  idle expiry; Basic auth accepted as well;
- GET /api/DeviceService/Devices pages at 50 unless $top is given; @odata.count is the filtered
  total; @odata.nextLink is server-relative and DROPS $filter (a client that follows it blindly
  reads chassis and IOMs too); '+' in the query is NOT a space (OME answers 400 for "Type+eq+1000");
- the fleet: servers, chassis (Type 2000) and IOMs (Type 4000, no service tag), every Status and
  PowerState code (PowerState 1 on disconnected devices), DeviceManagement entries with "[::]" and
  non-iDRAC agents, Identifier differing from DeviceServiceTag, ManagedState 4000, blades with
  SlotConfiguration, a server without a service tag, one with no usable address;
- every management address is on loopback (127.100.x.y for the fleet, 127.50.x.y / 127.60.x.y and
  "[::1]" for the traps; "[::]" and "" as the unusable entries), so that no lab job built from a
  synced inventory can make the executor connect off this machine;
- GET /api/DeviceService/Devices(<Id>)/InventoryDetails('<type>'): some devices answer as a
  collection ({"value": [...]}) instead of one object, as real appliances sometimes do;
- GET /api/ApplicationService/Info.

Faults (set in-process through ``OmeSim.faults`` or over HTTP with POST /_sim/faults): a page that
answers 500/503 k times, slow answers, a session that expires after k requests, a password change,
a page held until the test releases it (``faults.hold_page(skip)`` returns the Event to set; in-process
only; ``faults.held`` names the pages a client is waiting on; a hold gives up after 300 s).
Counters: GET /_sim/stats (lab only; never counted as API requests).

Run: ``python -m lab.ome_sim --devices N [--port 0] [--http] [--seed S]`` prints one JSON line
{url, username, password, ca_file} and serves until interrupted. Listens on 127.0.0.1 only.
``--idrac-addresses FILE|a,b,...`` points the iDRAC address of the first servers at those
addresses (e.g. lab/idrac_sim's "127.0.0.1:PORT"), so a demo's executor can reach them; the JSON
line then also holds {"idrac_addresses": {service tag: address}}.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

DEFAULT_PAGE = 50
MAX_SESSIONS_PER_USER = 100
HOLD_LIMIT_SECONDS = 300.0  # a held page answers anyway after this long
API_VERSION = "4.1.0"

# Literal trap devices placed at the start of every fleet (when it is large enough). Tests assert
# on these exact values, so they are written out rather than generated.
TRAP_TAGS = {
    "identifier_differs": "SLED0A1",
    "ipv6_unspecified_first": "V6FIRST",
    "non_idrac_first": "OSAGENT",
    "ipv6_idrac": "V6ONLY1",
    "no_idrac_agent": "NOIDRAC",
    "no_address": None,  # skipped: no usable address (service tag NOADDR1)
    "no_service_tag": None,  # skipped: server without service tag
    "disconnected": "DISCON1",
    "managed_state_4000": "PROXY01",
    "blade": "BLADE01",
}


def _ts(i: int) -> str:
    # OME timestamps carry no zone (they are UTC)
    return f"2024-05-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}"


def _profile(mid: int, agent: str, version: str, address: str, i: int) -> dict[str, Any]:
    return {
        "ManagementProfileId": mid,
        "ProfileId": "WSMAN_OOB" if agent == "iDRAC" else "OS_AGENT",
        "ManagementId": mid,
        "AgentId": 0,
        "AgentName": agent,
        "Version": version,
        "ManagementURL": f"https://{address}:443/" if address else "",
        "HasCreds": 0,
        "Status": 1000,
        "StatusDateTime": _ts(i),
    }


def _mgmt(mid: int, address: str, agent: str, version: str, i: int, dns: str = "") -> dict[str, Any]:
    return {
        "ManagementId": mid,
        "NetworkAddress": address,
        "MacAddress": f"d0:94:66:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
        "ManagementType": 2,
        "InstrumentationName": dns or f"host-{i}",
        "DnsName": dns,
        "ManagementProfile": [_profile(mid, agent, version, address, i)],
    }


def _idrac_ip(i: int) -> str:
    """Loopback only (127.100.0.1, 127.100.0.2, ...): the OME sync writes these into servers, and a
    lab job over "all servers" must never make the executor connect off this machine."""
    i += 1  # no address ending in .0
    return f"127.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


@dataclass
class Faults:
    """Fault injection; all fields may be changed while the simulator runs."""

    page_errors: dict[int, list[int]] = field(default_factory=dict)  # $skip -> [status, times left]
    delay_seconds: float = 0.0  # added to every API answer
    expire_after_requests: int | None = None  # the session in use expires after k authorised calls
    inventory_errors: dict[int, list[int]] = field(default_factory=dict)  # device Id -> [status, times]
    # $skip -> released when set; lets a test act while a client is known to wait on that page
    hold_pages: dict[int, threading.Event] = field(default_factory=dict)
    held: set[int] = field(default_factory=set)  # $skip values a request is waiting on right now

    def fail_page(self, skip: int, status: int = 503, times: int = 1) -> None:
        self.page_errors[skip] = [status, times]

    def hold_page(self, skip: int) -> threading.Event:
        """Answers to the page at `skip` wait until the returned Event is set (at most 300 s)."""
        event = threading.Event()
        self.hold_pages[skip] = event
        return event

    def to_dict(self) -> dict[str, Any]:
        return {
            "page_errors": {str(k): v for k, v in self.page_errors.items()},
            "delay_seconds": self.delay_seconds,
            "expire_after_requests": self.expire_after_requests,
            "inventory_errors": {str(k): v for k, v in self.inventory_errors.items()},
            "held": sorted(self.held),
        }

    def update(self, data: dict[str, Any]) -> None:
        if "page_errors" in data:
            self.page_errors = {int(k): list(v) for k, v in data["page_errors"].items()}
        if "delay_seconds" in data:
            self.delay_seconds = float(data["delay_seconds"])
        if "expire_after_requests" in data:
            v = data["expire_after_requests"]
            self.expire_after_requests = None if v is None else int(v)
        if "inventory_errors" in data:
            self.inventory_errors = {int(k): list(v) for k, v in data["inventory_errors"].items()}


class Fleet:
    """A deterministic set of N devices (seeded) with the shapes and traps of real OME."""

    def __init__(self, n: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.prefix = "".join(rng.choice("BCDFGHJKLMNPQRSTVWXYZ") for _ in range(2))
        self.devices: list[dict[str, Any]] = []
        self.inventory: dict[int, dict[str, Any]] = {}
        self.traps: dict[str, int] = {}  # trap name -> device Id
        builders = list(self._trap_builders().items())
        for i in range(n):
            dev_id = 10000 + i
            if i < len(builders):
                name, build = builders[i]
                dev = build(i, dev_id)
                self.traps[name] = dev_id
            elif i % 50 == 25:
                dev = self._chassis(i, dev_id)
            elif i % 50 == 26:
                dev = self._iom(i, dev_id)
            else:
                dev = self._server(i, dev_id)
            self.devices.append(dev)
        self.by_id = {d["Id"]: d for d in self.devices}
        self._filtered: dict[str, list[dict[str, Any]]] = {"": self.devices}

    # -- generated devices -------------------------------------------------------------------------
    def service_tag(self, i: int) -> str:
        n, chars = i, []
        for _ in range(5):
            n, r = divmod(n, 36)
            chars.append("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[r])
        return self.prefix + "".join(reversed(chars))

    def _base(self, i: int, dev_id: int, dtype: int, tag: str | None, model: str) -> dict[str, Any]:
        statuses = (1000, 1000, 1000, 2000, 3000, 4000, 5000)
        powers = (17, 17, 17, 18, 20, 21, 17)
        link = f"/api/DeviceService/Devices({dev_id})"
        dev: dict[str, Any] = {
            "@odata.type": "#DeviceService.Device",
            "@odata.id": link,
            "Id": dev_id,
            "Type": dtype,
            "Identifier": tag,
            "DeviceServiceTag": tag,
            "ChassisServiceTag": None,
            "Model": model,
            "PowerState": powers[i % len(powers)],
            "ManagedState": 3000,
            "Status": statuses[i % len(statuses)],
            "ConnectionState": True,
            "AssetTag": None,
            "SystemId": 1800 + i % 200,
            "DeviceName": f"srv-{i:05d}.lab.example",
            "LastInventoryTime": _ts(i),
            "LastStatusTime": _ts(i + 1),
            "DeviceSubscription": None,
            "DeviceCapabilities": [1, 2, 3, 4, 7, 8, 9, 41, 50, 1001, 1002, 1009],
            "SlotConfiguration": {},
            "DeviceManagement": [],
            "Actions": None,
        }
        for nav in (
            "SensorHealth",
            "Settings",
            "Temperature",
            "Power",
            "SystemUpTime",
            "BlinkStatus",
            "PowerUsageByDevice",
            "DeviceBladeSlots",
            "GraphicInfo",
            "DeployRequired",
            "InventoryDetails",
            "HardwareLogs",
            "SubSystemHealth",
            "RecentActivity",
            "InventoryTypes",
            "LogSeverities",
            "Faults",
            "Operations",
        ):
            dev[f"{nav}@odata.navigationLink"] = f"{link}/{nav}"
        return dev

    def _server(self, i: int, dev_id: int, tag: str | None = None) -> dict[str, Any]:
        tag = tag if tag is not None else self.service_tag(i)
        models = ("PowerEdge R640", "PowerEdge R740", "PowerEdge R750", "PowerEdge R760", "PowerEdge R650")
        dev = self._base(i, dev_id, 1000, tag, models[i % len(models)])
        fw = f"{5 + i % 3}.{i % 9}0.{i % 7}0.00"
        idrac = _mgmt(5000 + i * 2, _idrac_ip(i), "iDRAC", fw, i, f"idrac-{(tag or str(i)).lower()}")
        if i % 3 == 0:
            # real appliances list the disabled IPv6 stack as its own "[::]" entry, often first
            dev["DeviceManagement"] = [_mgmt(5001 + i * 2, "[::]", "iDRAC", fw, i), idrac]
        else:
            dev["DeviceManagement"] = [idrac]
        self.inventory[dev_id] = {
            "bios": f"{1 + i % 3}.{i % 20}.{i % 7}",
            "idrac": fw,
            "cpus": 1 if i % 4 == 0 else 2,
            "dimms": 8 if i % 2 else 12,
            "dimm_mb": 16384 if i % 2 else 32768,
            "as_collection": i % 7 == 3,
        }
        return dev

    def _chassis(self, i: int, dev_id: int) -> dict[str, Any]:
        tag = self.service_tag(i)
        dev = self._base(i, dev_id, 2000, tag, "PowerEdge MX7000")
        dev["DeviceName"] = f"MX-{tag}"
        dev["DeviceManagement"] = [_mgmt(5000 + i * 2, _idrac_ip(i), "MSM", "2.10.00", i)]
        return dev

    def _iom(self, i: int, dev_id: int) -> dict[str, Any]:
        dev = self._base(i, dev_id, 4000, None, "MX9116n Fabric Engine")
        dev["Identifier"] = f"IOM-{i}"
        dev["DeviceName"] = f"IOM-A{i % 2 + 1}"
        dev["DeviceManagement"] = [_mgmt(5000 + i * 2, _idrac_ip(i), "IOM", "10.5.4.1", i)]
        return dev

    # -- literal trap devices -------------------------------------------------------------------------
    def _trap_builders(self) -> dict[str, Any]:
        def identifier_differs(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "SLED0A1")
            dev["Identifier"] = "MX-CHASSIS-SLED-1"
            return dev

        def ipv6_unspecified_first(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "V6FIRST")
            dev["DeviceManagement"] = [
                _mgmt(6001, "[::]", "iDRAC", "6.10.30.00", i),
                _mgmt(6002, "", "iDRAC", "6.10.30.00", i),
                _mgmt(6003, "127.50.50.11", "iDRAC", "6.10.30.00", i),
            ]
            self.inventory[d]["idrac"] = "6.10.30.00"
            return dev

        def non_idrac_first(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "OSAGENT")
            dev["DeviceManagement"] = [
                _mgmt(6011, "127.60.60.5", "OMSA", "11.0.0.0", i),
                _mgmt(6012, "127.50.50.12", "iDRAC", "7.00.00.00", i),
            ]
            return dev

        def ipv6_idrac(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "V6ONLY1")
            dev["DeviceManagement"] = [_mgmt(6021, "[::1]", "iDRAC", "5.10.50.00", i)]
            return dev

        def no_idrac_agent(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "NOIDRAC")
            dev["DeviceManagement"] = [
                _mgmt(6031, "[::]", "OMSA", "10.3.0.0", i),
                _mgmt(6032, "127.60.60.14", "OMSA", "10.3.0.0", i),
            ]
            return dev

        def no_address(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "NOADDR1")
            dev["DeviceManagement"] = [_mgmt(6041, "[::]", "iDRAC", "4.40.00.00", i)]
            return dev

        def no_service_tag(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "")
            dev["Identifier"] = f"UNKNOWN-{d}"
            dev["DeviceName"] = "no-tag-server"
            return dev

        def disconnected(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "DISCON1")
            dev.update(PowerState=1, ConnectionState=False, Status=5000)
            return dev

        def managed_state_4000(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "PROXY01")
            dev.update(ManagedState=4000, Status=3000, PowerState=18)
            return dev

        def blade(i: int, d: int) -> dict[str, Any]:
            dev = self._server(i, d, "BLADE01")
            dev.update(Model="PowerEdge MX750c", ChassisServiceTag="CHAS001", Status=4000, PowerState=20)
            dev["SlotConfiguration"] = {
                "ChassisName": "MX-CHAS001",
                "ChassisId": "10053",
                "ChassisServiceTag": "CHAS001",
                "DeviceType": "1000",
                "SlotId": "10072",
                "SlotNumber": "1",
                "SlotName": "SLED-1",
                "SlotType": "2000",
                "SledBlockPowerOn": "None",
            }
            return dev

        return {
            "identifier_differs": identifier_differs,
            "ipv6_unspecified_first": ipv6_unspecified_first,
            "non_idrac_first": non_idrac_first,
            "ipv6_idrac": ipv6_idrac,
            "no_idrac_agent": no_idrac_agent,
            "no_address": no_address,
            "no_service_tag": no_service_tag,
            "disconnected": disconnected,
            "managed_state_4000": managed_state_4000,
            "blade": blade,
        }

    def assign_idrac_addresses(self, addresses: Sequence[str]) -> dict[str, str]:
        """Point the iDRAC entry of the first len(addresses) servers (Type 1000 with a service tag
        and a usable iDRAC address, in fleet order) at `addresses`; returns service tag -> address."""
        todo = iter(addresses)
        assigned: dict[str, str] = {}
        for dev in self.devices:
            if dev["Type"] != 1000 or not dev["DeviceServiceTag"]:
                continue
            entry = next(
                (
                    e
                    for e in dev["DeviceManagement"]
                    if e["NetworkAddress"] not in ("", "[::]")
                    and any(p["AgentName"] == "iDRAC" for p in e["ManagementProfile"])
                ),
                None,
            )
            if entry is None:
                continue
            address = next(todo, None)
            if address is None:
                break
            entry["NetworkAddress"] = address
            for profile in entry["ManagementProfile"]:
                profile["ManagementURL"] = f"https://{address}/"
            assigned[dev["DeviceServiceTag"]] = address
        return assigned

    # -- queries ---------------------------------------------------------------------------------------
    def filtered(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate the small $filter subset OME clients use: `Field eq value` joined by or/and."""
        if expr not in self._filtered:
            self._filtered[expr] = [d for d in self.devices if _match(expr, d)]
        return self._filtered[expr]

    def servers(self) -> list[dict[str, Any]]:
        return self.filtered("Type eq 1000")

    def inventory_detail(self, dev_id: int, kind: str) -> dict[str, Any] | None:
        inv = self.inventory.get(dev_id)
        if inv is None:
            return None
        link = f"/api/DeviceService/Devices({dev_id})/InventoryDetails('{kind}')"
        if kind == "serverProcessors":
            info = [
                {
                    "Id": 1000 + c,
                    "Family": "Intel(R) Xeon(TM)",
                    "MaxSpeed": 4000,
                    "CurrentSpeed": 2100,
                    "SlotNumber": f"CPU.Socket.{c + 1}",
                    "Status": 1000,
                    "NumberOfCores": 16,
                    "NumberOfEnabledCores": 16,
                    "BrandName": "Intel",
                    "ModelName": "Intel(R) Xeon(R) Gold 6338",
                    "InstanceId": f"CPU.Socket.{c + 1}",
                    "Voltage": "1.8",
                }
                for c in range(inv["cpus"])
            ]
        elif kind == "serverMemoryDevices":
            info = [
                {
                    "Id": 2000 + m,
                    "Name": f"DIMM.Socket.A{m + 1}",
                    "BankName": "A",
                    "Size": inv["dimm_mb"],
                    "Manufacturer": "Hynix Semiconductor",
                    "PartNumber": "HMA84GR7",
                    "SerialNumber": f"{dev_id * 100 + m:08X}",
                    "TypeDetails": "DDR4 DIMM",
                    "Speed": 3200,
                    "CurrentOperatingSpeed": 3200,
                    "Rank": "Dual Rank",
                    "InstanceId": f"DIMM.Socket.A{m + 1}",
                    "DeviceDescription": f"DIMM A{m + 1}",
                    "Status": 1000,
                }
                for m in range(inv["dimms"])
            ]
        elif kind == "deviceSoftware":
            info = [
                {
                    "Version": inv["idrac"],
                    "InstallationDate": "2024-01-10 10:00:00.000",
                    "Status": "Installed",
                    "SoftwareType": "FRMW",
                    "DeviceDescription": "Integrated Dell Remote Access Controller",
                    "InstanceId": "DCIM:INSTALLED#iDRAC.Embedded.1-1#IDRACinfo",
                    "ComponentId": "25227",
                },
                {
                    "Version": inv["bios"],
                    "InstallationDate": "2024-01-10 10:00:00.000",
                    "Status": "Installed",
                    "SoftwareType": "BIOS",
                    "DeviceDescription": "BIOS",
                    "InstanceId": "DCIM:INSTALLED#741__BIOS.Setup.1-1",
                    "ComponentId": "159",
                },
            ]
        else:
            info = []
        detail = {
            "@odata.type": "#DeviceService.InventoryDetail",
            "@odata.id": link,
            "InventoryType": kind,
            "InventoryInfo": info,
        }
        if inv["as_collection"]:
            return {
                "@odata.context": "/api/$metadata#Collection(DeviceService.InventoryDetail)",
                "@odata.count": 1,
                "value": [detail],
            }
        detail["@odata.context"] = "/api/$metadata#DeviceService.InventoryDetail"
        return detail


_COND = re.compile(r"^\s*(\w+)\s+eq\s+('?)([^']*)\2\s*$")


class FilterError(ValueError):
    pass


def _match(expr: str, dev: dict[str, Any]) -> bool:
    if " or " in expr:
        return any(_match(p, dev) for p in expr.split(" or "))
    if " and " in expr:
        return all(_match(p, dev) for p in expr.split(" and "))
    m = _COND.match(expr)
    if not m:
        raise FilterError(expr)
    name, quoted, value = m.groups()
    actual = dev.get(name)
    return str(actual) == value if quoted or not isinstance(actual, int) else actual == int(value)


def _error(message_id: str, message: str, resolution: str = "") -> dict[str, Any]:
    return {
        "error": {
            "code": "Base.1.0.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [
                {
                    "MessageId": message_id,
                    "RelatedProperties": [],
                    "Message": message,
                    "MessageArgs": [],
                    "Severity": "Critical",
                    "Resolution": resolution,
                }
            ],
        }
    }


@dataclass
class _Session:
    id: str
    token: str
    user: str
    last_used: float
    requests: int = 0


class OmeSim:
    """The simulator: an HTTP(S) server in a background thread with readable counters."""

    def __init__(
        self,
        devices: int = 120,
        *,
        seed: int = 1,
        https: bool = True,
        port: int = 0,
        username: str = "admin",
        password: str = "Sim-Passw0rd!",
        session_timeout: float = 1800.0,
        max_sessions: int = MAX_SESSIONS_PER_USER,
        idrac_addresses: Sequence[str] = (),
    ) -> None:
        self.fleet = Fleet(devices, seed)
        self.idrac_addresses = self.fleet.assign_idrac_addresses(idrac_addresses) if idrac_addresses else {}
        self.https = https
        self.username = username
        self.password = password
        self.session_timeout = session_timeout
        self.max_sessions = max_sessions
        self.faults = Faults()
        self.lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self.ca_file: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> OmeSim:
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.sim = self  # type: ignore[attr-defined]
        if self.https:
            from lab.tls import make_tls

            self._tmp = tempfile.TemporaryDirectory(prefix="ome-sim-")
            files = make_tls(Path(self._tmp.name), name="OME simulator")
            server.socket = files.server_context().wrap_socket(server.socket, server_side=True)
            self.ca_file = str(files.ca_file)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ome-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OmeSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "simulator not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """host:port, as an operator would put in OME_HOST."""
        return f"127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.url,
            "username": self.username,
            "password": self.password,
            "ca_file": self.ca_file,
        }
        if self.idrac_addresses:
            info["idrac_addresses"] = self.idrac_addresses
        return info

    # -- counters -------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self.lock:
            self.sessions_created = 0
            self.sessions_deleted = 0
            self.sessions_expired = 0
            self.sessions_refused = 0
            self.auth_failures = 0
            self.requests = 0
            self.requests_by_path: dict[str, int] = {}
            self.max_top_seen = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            self._expire_idle()
            return {
                "open_sessions": len(self.sessions),
                "sessions_created": self.sessions_created,
                "sessions_deleted": self.sessions_deleted,
                "sessions_expired": self.sessions_expired,
                "sessions_refused": self.sessions_refused,
                "auth_failures": self.auth_failures,
                "requests": self.requests,
                "requests_by_path": dict(self.requests_by_path),
                "max_top_seen": self.max_top_seen,
                "devices": len(self.fleet.devices),
                "servers": len(self.fleet.servers()),
            }

    def expire_all_sessions(self) -> None:
        """As if the appliance restarted or every session timed out."""
        with self.lock:
            self.sessions_expired += len(self.sessions)
            self.sessions.clear()

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for token, s in list(self.sessions.items()):
            if now - s.last_used > self.session_timeout:
                del self.sessions[token]
                self.sessions_expired += 1

    def _count(self, path: str) -> None:
        key = re.sub(r"\([^)]*\)", "(*)", path)
        with self.lock:
            self.requests += 1
            self.requests_by_path[key] = self.requests_by_path.get(key, 0) + 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real appliance (nginx) does
    server_version = "nginx"
    sys_version = ""

    @property
    def sim(self) -> OmeSim:
        return self.server.sim  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------------------
    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; odata.metadata=minimal; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    def _split(self) -> tuple[str, dict[str, str]]:
        path, _, query = self.path.partition("?")
        params: dict[str, str] = {}
        for part in query.split("&") if query else []:
            k, _, v = part.partition("=")
            # OME decodes %XX but does not turn '+' into a space
            params[unquote(k)] = unquote(v)
        return unquote(path), params

    def _authorised(self) -> _Session | bool:
        sim = self.sim
        token = self.headers.get("X-Auth-Token")
        auth = self.headers.get("Authorization", "")
        with sim.lock:
            sim._expire_idle()
            if token:
                s = sim.sessions.get(token)
                if s is None:
                    return False
                s.last_used = time.monotonic()
                s.requests += 1
                limit = sim.faults.expire_after_requests
                if limit is not None and s.requests > limit:
                    del sim.sessions[token]
                    sim.sessions_expired += 1
                    sim.faults.expire_after_requests = None  # once
                    return False
                return s
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            return user == sim.username and pw == sim.password
        return False

    def _unauthorised(self) -> None:
        with self.sim.lock:
            self.sim.auth_failures += 1
        self._send(
            401,
            _error(
                "CGEN1008",
                "Unable to process the request because an error occurred.",
                "Log in again and retry the operation.",
            ),
        )

    # -- verbs ------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path, params = self._split()
        if path.startswith("/_sim/"):
            return self._sim_get(path)
        self.sim._count(path)
        if self.sim.faults.delay_seconds:
            time.sleep(self.sim.faults.delay_seconds)
        if not self._authorised():
            return self._unauthorised()
        if path == "/api/ApplicationService/Info":
            return self._send(
                200,
                {
                    "@odata.context": "/api/$metadata#ApplicationService.Info",
                    "@odata.type": "#ApplicationService.Info",
                    "@odata.id": "/api/ApplicationService/Info",
                    "Name": "OpenManage Enterprise",
                    "Description": "OpenManage Enterprise",
                    "Vendor": "Dell EMC",
                    "Version": API_VERSION,
                    "BuildNumber": "26",
                    "BuildDate": "2024-04-01 00:00:00.000",
                    "Guid": "f5a8c7e0-0000-4000-8000-000000000001",
                    "OperationJobId": 0,
                    "OperationStatus": "Completed",
                },
            )
        if path == "/api/DeviceService/Devices":
            return self._devices(params)
        m = re.fullmatch(r"/api/DeviceService/Devices\((\d+)\)(?:/InventoryDetails\('(\w+)'\))?", path)
        if m:
            return self._device(int(m.group(1)), m.group(2))
        self._send(
            404,
            _error(
                "CGEN1004",
                "Unable to complete the request because the resource URI "
                "does not exist or is not implemented.",
            ),
        )

    def _devices(self, params: dict[str, str]) -> None:
        sim = self.sim
        try:
            top = int(params.get("$top", DEFAULT_PAGE))
            skip = int(params.get("$skip", 0))
            rows = sim.fleet.filtered(params.get("$filter", ""))
        except (ValueError, FilterError):
            return self._send(
                400,
                _error(
                    "CGEN1006", "Unable to complete the request because the query parameters are invalid."
                ),
            )
        with sim.lock:
            sim.max_top_seen = max(sim.max_top_seen, top)
            fault = sim.faults.page_errors.get(skip)
            if fault and fault[1] > 0:
                fault[1] -= 1
                status = fault[0]
            else:
                status = 0
            hold = sim.faults.hold_pages.get(skip)
            if hold is not None:
                sim.faults.held.add(skip)
        if hold is not None:
            try:
                hold.wait(HOLD_LIMIT_SECONDS)  # bounded: a forgotten release must not hang the lab
            finally:
                with sim.lock:
                    sim.faults.held.discard(skip)
        if status:
            return self._send(
                status,
                _error(
                    "CGEN1009",
                    "Unable to complete the request because the server is busy.",
                    "Retry the operation.",
                ),
            )
        body: dict[str, Any] = {
            "@odata.context": "/api/$metadata#Collection(DeviceService.Device)",
            "@odata.count": len(rows),
            "value": rows[skip : skip + top],
        }
        if skip + top < len(rows):
            # real OME drops $filter from the next link
            body["@odata.nextLink"] = f"/api/DeviceService/Devices?$skip={skip + top}&$top={top}"
        self._send(200, body)

    def _device(self, dev_id: int, kind: str | None) -> None:
        sim = self.sim
        dev = sim.fleet.by_id.get(dev_id)
        if dev is None:
            return self._send(
                404,
                _error(
                    "CGEN1004",
                    "Unable to complete the request because the "
                    "resource URI does not exist or is not implemented.",
                ),
            )
        if kind is None:
            return self._send(200, dict(dev, **{"@odata.context": "/api/$metadata#DeviceService.Device"}))
        with sim.lock:
            fault = sim.faults.inventory_errors.get(dev_id)
            status = 0
            if fault and fault[1] > 0:
                fault[1] -= 1
                status = fault[0]
        if status:
            return self._send(
                status,
                _error(
                    "CGEN1009",
                    "Unable to complete the request because the server is busy.",
                    "Retry the operation.",
                ),
            )
        detail = sim.fleet.inventory_detail(dev_id, kind)
        if detail is None:
            return self._send(404, _error("CGEN1004", "Inventory not available for this device."))
        self._send(200, detail)

    def do_POST(self) -> None:
        path, _ = self._split()
        body = self._body()
        if path == "/_sim/faults":
            self.sim.faults.update(body or {})
            return self._send(200, self.sim.faults.to_dict())
        if path == "/_sim/reset":
            self.sim.reset_stats()
            return self._send(204)
        self.sim._count(path)
        if path != "/api/SessionService/Sessions":
            return self._send(405, _error("CGEN1004", "Method not allowed."))
        return self._login(body)

    def _login(self, body: Any) -> None:
        sim = self.sim
        if not isinstance(body, dict) or "UserName" not in body or "Password" not in body:
            return self._send(
                400, _error("CGEN1006", "Unable to complete the request because the input value is invalid.")
            )
        if body["UserName"] != sim.username or body["Password"] != sim.password:
            with sim.lock:
                sim.auth_failures += 1
            return self._send(
                401,
                _error(
                    "CSEC5002",
                    "Unable to complete the operation because an invalid username and/or "
                    "password is entered, and therefore authentication failed.",
                    "Enter valid user name and password and retry the operation.",
                ),
            )
        with sim.lock:
            sim._expire_idle()
            if sum(1 for s in sim.sessions.values() if s.user == body["UserName"]) >= sim.max_sessions:
                sim.sessions_refused += 1
                refused = True
            else:
                refused = False
                sid = uuid.uuid4().hex
                token = uuid.uuid4().hex
                sim.sessions[token] = _Session(sid, token, body["UserName"], time.monotonic())
                sim.sessions_created += 1
        if refused:
            return self._send(
                400,
                _error(
                    "CURS1209",
                    "Unable to create a session because the maximum number of sessions "
                    "for this user has been reached.",
                    "Close unused sessions and retry.",
                ),
            )
        self._send(
            201,
            {
                "@odata.context": "/api/$metadata#SessionService.Session",
                "@odata.type": "#SessionService.Session",
                "@odata.id": f"/api/SessionService/Sessions('{sid}')",
                "Id": sid,
                "Description": body["UserName"],
                "Name": body.get("SessionType", "API"),
                "UserName": body["UserName"],
                "UserId": 10078,
                "Password": None,
                "Roles": ["ADMINISTRATOR"],
                "IpAddress": self.client_address[0],
                "StartTimeStamp": _ts(0),
                "LastAccessedTimeStamp": _ts(0),
                "DirectoryGroup": [],
            },
            {"X-Auth-Token": token, "Location": f"/api/SessionService/Sessions('{sid}')"},
        )

    def do_DELETE(self) -> None:
        path, _ = self._split()
        self.sim._count(path)
        m = re.fullmatch(r"/api/SessionService/Sessions\('([0-9a-f]+)'\)", path)
        if not m:
            return self._send(405, _error("CGEN1004", "Method not allowed."))
        if not self._authorised():
            return self._unauthorised()
        sim = self.sim
        with sim.lock:
            token = next((t for t, s in sim.sessions.items() if s.id == m.group(1)), None)
            if token is not None:
                del sim.sessions[token]
                sim.sessions_deleted += 1
        if token is None:
            return self._send(404, _error("CGEN1004", "Session not found."))
        self._send(204)

    def _sim_get(self, path: str) -> None:
        if path == "/_sim/stats":
            return self._send(200, self.sim.stats())
        if path == "/_sim/traps":
            return self._send(200, self.sim.fleet.traps)
        self._send(404, {"error": "unknown"})


def _address_list(value: str | None) -> list[str]:
    """A file of addresses (whitespace or comma separated), or a comma list."""
    if not value:
        return []
    text = Path(value).read_text() if Path(value).is_file() else value
    return [a for a in re.split(r"[\s,]+", text) if a]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.ome_sim", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=120, help="devices in the fleet (default 120)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--http", action="store_true", help="plain HTTP (benchmarks); default HTTPS")
    p.add_argument("--seed", type=int, default=1, help="fleet seed (default 1)")
    p.add_argument("--username", default="admin")
    p.add_argument("--password", default="Sim-Passw0rd!")
    p.add_argument(
        "--idrac-addresses",
        metavar="FILE|LIST",
        help="iDRAC addresses (host or host:port) for the first servers: a file, or a comma list",
    )
    args = p.parse_args(argv)
    sim = OmeSim(
        args.devices,
        seed=args.seed,
        https=not args.http,
        port=args.port,
        username=args.username,
        password=args.password,
        idrac_addresses=_address_list(args.idrac_addresses),
    )
    sim.start()
    import signal

    # SIGTERM (from a benchmark or test) shuts down cleanly, removing the key material
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(json.dumps(sim.info()), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
