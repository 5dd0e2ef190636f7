"""vCenter connection and property-collector snapshots (pyVmomi).

The whole inventory is read in a handful of SOAP round trips, independent of its size: one
ContainerView over the four object types we need, one RetrievePropertiesEx listing exactly the
property paths we use (ContinueRetrievePropertiesEx while the server pages), DestroyView. Each
host's cluster and datacenter are resolved from the `parent` chain inside the collected data, so
nothing is ever read attribute by attribute (each such read is a network round trip).

The collector yields plain dicts keyed by property path (the pyvmomi-community `pchelper` idea);
`build_inventory` turns them into frozen records.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import VmomiSupport, vim, vmodl

from lib.checks import Endpoint, tcp_check, tls_check
from lib.config import VcenterSettings
from lib.errors import (
    AgentError,
    AuthError,
    ConfigError,
    ConnectivityError,
    RemoteError,
    RequestTimeoutError,
    TLSError,
)
from lib.http import TLSConfig

log = logging.getLogger(__name__)

SYSTEM = "vCenter"

# Exactly the property paths we read, per type. Data-object sub-paths keep the answer small.
# `hardware.systemInfo` (not `.serialNumber`) because that sub-property is unknown to vCenter < 6.7
# and an unknown path fails the whole request.
PROPERTY_PATHS: dict[type, tuple[str, ...]] = {
    vim.Folder: ("name", "parent"),
    vim.Datacenter: ("name", "parent"),
    vim.ComputeResource: ("name", "parent"),  # standalone hosts' parent; clusters are a subtype
    # `configurationEx` whole: its declared type is the ComputeResource base, so sub-paths into the
    # cluster subtype (dasConfig, drsConfig) are not valid property paths; it is one small object
    # per cluster. (The deprecated `configuration` is left unset by some servers, vcsim among them.)
    vim.ClusterComputeResource: ("configurationEx", "summary.numHosts", "overallStatus"),
    vim.HostSystem: (
        "name",
        "parent",
        "hardware.systemInfo",
        "summary.config.product.version",
        "summary.config.product.build",
        "runtime.connectionState",
        "runtime.powerState",
        "runtime.inMaintenanceMode",
        "summary.hardware.numCpuPkgs",
        "summary.hardware.numCpuCores",
        "summary.hardware.numCpuThreads",
        "summary.hardware.cpuModel",
        "summary.hardware.memorySize",
    ),
}
VIEW_TYPES = (vim.Datacenter, vim.Folder, vim.ComputeResource, vim.HostSystem)

# Values vendors put in serial-number fields when there is no serial.
_NO_SERIAL = frozenset(
    {"", "NONE", "N/A", "NA", "0", "NOT SPECIFIED", "TO BE FILLED BY O.E.M.", "DEFAULT STRING"}
)

LOGIN_HINT = (
    "Check VCENTER_USER and VCENTER_PASSWORD. vCenter users carry their SSO domain, e.g. "
    "administrator@vsphere.local or svc-dsm@vsphere.local (an Active Directory user: user@corp.example). "
    "Repeated failures can lock the account under the SSO lockout policy (by default 5 failures, "
    "unlocked after 5 minutes): check it is not locked before retrying."
)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class DatacenterInfo:
    moref: str
    name: str


@dataclass(frozen=True)
class ClusterInfo:
    moref: str
    name: str
    datacenter: str | None
    datacenter_moref: str | None
    ha_enabled: bool | None
    drs_enabled: bool | None
    drs_automation_level: str | None
    host_count: int
    overall_status: str | None


@dataclass(frozen=True)
class HostInfo:
    moref: str
    name: str
    datacenter: str | None
    datacenter_moref: str | None
    cluster: str | None  # None for a standalone host
    cluster_moref: str | None
    serial_number: str | None
    vendor: str | None
    model: str | None
    esxi_version: str | None
    esxi_build: str | None
    connection_state: str | None
    power_state: str | None
    maintenance_mode: bool
    cpu_sockets: int | None
    cpu_cores: int | None
    cpu_threads: int | None
    cpu_model: str | None
    memory_bytes: int | None

    @property
    def memory_gb(self) -> int | None:
        return round(self.memory_bytes / 2**30) if self.memory_bytes else None


@dataclass(frozen=True)
class AboutInfo:
    name: str
    api_type: str
    version: str
    build: str
    instance_uuid: str | None


@dataclass(frozen=True)
class Inventory:
    about: AboutInfo
    datacenters: tuple[DatacenterInfo, ...]
    clusters: tuple[ClusterInfo, ...]
    hosts: tuple[HostInfo, ...]
    pages: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Collection: plain dicts keyed by property path


def _plain(value: Any) -> Any:
    """Managed-object references become their id; data objects stay (they are local, no I/O)."""
    if isinstance(value, VmomiSupport.ManagedObject):
        return value._moId
    return value


def _row(obj_content: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"_moref": obj_content.obj._moId, "_type": obj_content.obj._wsdlName}
    for prop in obj_content.propSet or ():
        row[prop.name] = _plain(prop.val)
    for missing in getattr(obj_content, "missingSet", None) or ():
        # e.g. a property the server cannot read for this object; the record gets None for it
        log.debug(
            "vCenter left %s of %s unset: %s", missing.path, row["_moref"], type(missing.fault).__name__
        )
    return row


def retrieve_pages(
    collector: Any, spec_set: list[Any], *, max_objects: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """RetrievePropertiesEx, then ContinueRetrievePropertiesEx while the server returns a token.

    Yields one list of rows per page. If the caller stops early, the server-side result set is
    released with CancelRetrievePropertiesEx instead of being left to time out.
    """
    options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=max_objects)
    result = collector.RetrievePropertiesEx(specSet=spec_set, options=options)
    token = None
    try:
        while result is not None:
            token = result.token
            yield [_row(oc) for oc in result.objects or ()]
            if not token:
                return
            result = collector.ContinueRetrievePropertiesEx(token=token)
            token = None
    finally:
        if token:
            try:
                collector.CancelRetrievePropertiesEx(token=token)
            except Exception as exc:  # best effort: the server expires it anyway
                log.debug("CancelRetrievePropertiesEx failed: %s", exc)


def filter_spec(view: Any, paths: Mapping[type, tuple[str, ...]] = PROPERTY_PATHS) -> Any:
    """One PropertyFilterSpec: every object of the view, with exactly the listed paths per type."""
    pc = vmodl.query.PropertyCollector
    traverse = pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
    obj_spec = pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])
    prop_set = [pc.PropertySpec(type=t, pathSet=list(p), all=False) for t, p in paths.items()]
    return pc.FilterSpec(objectSet=[obj_spec], propSet=prop_set, reportMissingObjectsInResults=False)


def collect(content: Any, *, max_objects: int | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """All objects of VIEW_TYPES under the root folder, keyed by moref; and the number of pages."""
    view = content.viewManager.CreateContainerView(content.rootFolder, list(VIEW_TYPES), True)
    rows: dict[str, dict[str, Any]] = {}
    pages = 0
    try:
        for page in retrieve_pages(content.propertyCollector, [filter_spec(view)], max_objects=max_objects):
            pages += 1
            for row in page:
                rows.setdefault(row["_moref"], {}).update(row)
    finally:
        view.DestroyView()
    return rows, pages


# ---------------------------------------------------------------------------------------------
# Normalisation: parent chains resolved inside the collected data


def _ancestor(rows: Mapping[str, Mapping[str, Any]], moref: str | None, kind: str) -> dict[str, Any] | None:
    """The nearest ancestor of `kind` following `parent`; guards against cycles and gaps."""
    seen: set[str] = set()
    current = rows.get(moref) if moref else None
    while current is not None:
        parent_id = current.get("parent")
        if not parent_id or parent_id in seen:
            return None
        seen.add(parent_id)
        current = rows.get(parent_id)
        if current is not None and current.get("_type") == kind:
            return dict(current)
    return None


def serial_from(system_info: Any) -> str | None:
    """hardware.systemInfo.serialNumber, else the ServiceTag entry of otherIdentifyingInfo."""
    if system_info is None:
        return None
    serial = (getattr(system_info, "serialNumber", None) or "").strip()
    if serial.upper() not in _NO_SERIAL:
        return serial
    for ident in getattr(system_info, "otherIdentifyingInfo", None) or ():
        key = getattr(getattr(ident, "identifierType", None), "key", None)
        value = (ident.identifierValue or "").strip()
        if key == "ServiceTag" and value.upper() not in _NO_SERIAL:
            return value
    return None


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


def build_inventory(rows: Mapping[str, Mapping[str, Any]], about: AboutInfo, *, pages: int = 1) -> Inventory:
    datacenters = tuple(
        sorted(
            (
                DatacenterInfo(moref=r["_moref"], name=r.get("name") or r["_moref"])
                for r in _of(rows, "Datacenter")
            ),
            key=lambda d: d.name,
        )
    )
    hosts = tuple(sorted((_host(rows, r) for r in _of(rows, "HostSystem")), key=lambda h: h.name))
    per_cluster: dict[str, int] = {}
    for h in hosts:
        if h.cluster_moref:
            per_cluster[h.cluster_moref] = per_cluster.get(h.cluster_moref, 0) + 1
    clusters = tuple(
        sorted(
            (_cluster(rows, r, per_cluster) for r in _of(rows, "ClusterComputeResource")),
            key=lambda c: c.name,
        )
    )
    return Inventory(about=about, datacenters=datacenters, clusters=clusters, hosts=hosts, pages=pages)


def _of(rows: Mapping[str, Mapping[str, Any]], kind: str) -> Iterable[Mapping[str, Any]]:
    return (r for r in rows.values() if r.get("_type") == kind)


def _cluster(
    rows: Mapping[str, Mapping[str, Any]], r: Mapping[str, Any], per_cluster: Mapping[str, int]
) -> ClusterInfo:
    dc = _ancestor(rows, r["_moref"], "Datacenter")
    num_hosts = r.get("summary.numHosts")
    config = r.get("configurationEx")
    return ClusterInfo(
        moref=r["_moref"],
        name=r.get("name") or r["_moref"],
        datacenter=dc.get("name") if dc else None,
        datacenter_moref=dc["_moref"] if dc else None,
        ha_enabled=_attr(config, "dasConfig", "enabled"),
        drs_enabled=_attr(config, "drsConfig", "enabled"),
        drs_automation_level=_str(_attr(config, "drsConfig", "defaultVmBehavior")),
        host_count=int(num_hosts) if num_hosts is not None else per_cluster.get(r["_moref"], 0),
        overall_status=_str(r.get("overallStatus")),
    )


def _host(rows: Mapping[str, Mapping[str, Any]], r: Mapping[str, Any]) -> HostInfo:
    parent = rows.get(r.get("parent") or "")
    cluster = parent if parent is not None and parent.get("_type") == "ClusterComputeResource" else None
    dc = _ancestor(rows, r["_moref"], "Datacenter")
    info = r.get("hardware.systemInfo")
    return HostInfo(
        moref=r["_moref"],
        name=r.get("name") or r["_moref"],
        datacenter=dc.get("name") if dc else None,
        datacenter_moref=dc["_moref"] if dc else None,
        cluster=cluster.get("name") if cluster else None,
        cluster_moref=cluster["_moref"] if cluster else None,
        serial_number=serial_from(info),
        vendor=(getattr(info, "vendor", None) or None) if info is not None else None,
        model=(getattr(info, "model", None) or None) if info is not None else None,
        esxi_version=_str(r.get("summary.config.product.version")),
        esxi_build=_str(r.get("summary.config.product.build")),
        connection_state=_str(r.get("runtime.connectionState")),
        power_state=_str(r.get("runtime.powerState")),
        maintenance_mode=bool(r.get("runtime.inMaintenanceMode")),
        cpu_sockets=_int(r.get("summary.hardware.numCpuPkgs")),
        cpu_cores=_int(r.get("summary.hardware.numCpuCores")),
        cpu_threads=_int(r.get("summary.hardware.numCpuThreads")),
        cpu_model=_str(r.get("summary.hardware.cpuModel")),
        memory_bytes=_int(r.get("summary.hardware.memorySize")),
    )


# ---------------------------------------------------------------------------------------------
# Connection


def certificate_subject(host: str, port: int, timeout: float) -> str | None:
    """The subject of the certificate a server presents, read without verifying it (for hints)."""
    try:
        from cryptography import x509

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None
    except Exception as exc:  # only decorates a hint: never hide the real error behind this one
        log.debug("could not read the certificate of %s:%s: %s", host, port, exc)
        return None


def endpoint(host: str, port: int, tls: TLSConfig) -> Endpoint:
    """vCenter as lib.checks sees it (for the probe below and vcenter-sync --check)."""
    return Endpoint(host, port, "VCENTER_HOST / VCENTER_PORT", SYSTEM, tls)


def probe(host: str, port: int, tls: TLSConfig, timeout: float) -> None:
    """Connect and shake hands once with a timeout, so refused, DNS, timeout and untrusted-certificate
    failures become clear errors before pyVmomi (whose version probe has no timeout) is involved.
    The probes and their wording are lib.checks' (the same as --check prints); an untrusted
    certificate also names its subject."""
    ep = endpoint(host, port, tls)
    tcp_check(ep, timeout=timeout)
    tls_check(ep, timeout=timeout, untrusted=lambda reason: _untrusted(host, port, timeout, reason))


def _untrusted(host: str, port: int, timeout: float, reason: str) -> TLSError:
    subject = certificate_subject(host, port, timeout)
    named = f" (certificate subject: {subject})" if subject else ""
    return TLSError(
        f"vCenter's TLS certificate at {host}:{port} is not trusted: {reason}{named}.",
        hint="Set VCENTER_CA_BUNDLE to the PEM file of the CA that signed it (vCenter's VMCA root: "
        "https://<vcenter>/certs/download.zip), or VCENTER_VERIFY_SSL=false to skip verification.",
    )


def _about(content: Any) -> AboutInfo:
    a = content.about
    return AboutInfo(
        name=a.fullName or a.name or "",
        api_type=a.apiType or "",
        version=a.version or "",
        build=a.build or "",
        instance_uuid=a.instanceUuid or None,
    )


def split_host(host: str, port: int) -> tuple[str, int]:
    """VCENTER_HOST as a name, an address, `name:port` or a URL (`https://vc.example.com/sdk`)."""
    text = host.strip()
    if "://" in text:
        parts = urlsplit(text)
        return parts.hostname or text, parts.port or port
    if text.count(":") == 1:  # name:port (an IPv6 address has several colons)
        name, _, maybe_port = text.partition(":")
        if maybe_port.isdigit():
            return name, int(maybe_port)
    return text.strip("[]"), port


class VSphereClient:
    """One vCenter session: `with VSphereClient(settings) as vc: inv = vc.inventory()`.

    Always logs out on exit. `round_trips` counts the SOAP calls made after login (the login
    itself is three: the vimServiceVersions.xml probe, RetrieveServiceContent and Login).
    """

    def __init__(self, settings: VcenterSettings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.host, self.port = split_host(settings.host, settings.port)
        self.timeout = timeout
        self.si: Any = None
        self.content: Any = None
        self.round_trips = 0

    def connect(self) -> None:
        probe(self.host, self.port, self.settings.tls, self.timeout)
        self.si = self._smart_connect()
        try:
            self._count_round_trips()
            self.content = self.si.content  # fetched once; every later read uses this copy
            self._check_is_vcenter()
        except BaseException:
            self.close()
            raise

    def _smart_connect(self) -> Any:
        s = self.settings
        try:
            return SmartConnect(
                host=self.host,
                port=self.port,
                user=s.user,
                pwd=s.password,
                sslContext=s.tls.ssl_context(),
                httpConnectionTimeout=self.timeout,
            )
        except vim.fault.InvalidLogin:
            raise AuthError(
                f"vCenter at {self.host} rejected the login of {s.user!r}.", hint=LOGIN_HINT
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise _untrusted(self.host, self.port, self.timeout, exc.verify_message or str(exc)) from None
        except vmodl.MethodFault as exc:
            raise _fault_error(exc, "login") from None
        except TimeoutError:
            raise RequestTimeoutError(f"vCenter at {self.host}:{self.port} did not answer in time.") from None
        except OSError as exc:
            raise ConnectivityError(
                f"Connection to vCenter at {self.host}:{self.port} failed: {exc}."
            ) from None
        except Exception as exc:  # pyVmomi raises a bare Exception when /sdk is not a vSphere API
            raise ConnectivityError(
                f"{self.host}:{self.port} does not answer as a vSphere API endpoint: {exc}",
                hint="Check that VCENTER_HOST and VCENTER_PORT point at vCenter Server.",
            ) from None

    def _count_round_trips(self) -> None:
        stub = self.si._stub
        invoke: Callable[..., Any] = stub.InvokeMethod

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.round_trips += 1
            return invoke(*args, **kwargs)

        stub.InvokeMethod = counting

    def _check_is_vcenter(self) -> None:
        about = self.content.about
        if about.apiType == "HostAgent":
            raise ConfigError(
                f"{self.settings.host} is an ESXi host ({about.fullName}), not a vCenter Server.",
                hint="Set VCENTER_HOST to the vCenter Server that manages this host: the sync reads "
                "datacenters, clusters and hosts from vCenter only.",
            )

    def inventory(self, *, max_objects: int | None = None) -> Inventory:
        if self.si is None:
            self.connect()
        try:
            rows, pages = collect(self.content, max_objects=max_objects)
        except vim.fault.NotAuthenticated:
            raise AuthError(
                "The vCenter session ended while reading the inventory.",
                hint="Someone or something terminated the session; run the sync again.",
            ) from None
        except vmodl.MethodFault as exc:
            raise _fault_error(exc, "inventory read") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectivityError(
                f"Connection to vCenter lost while reading the inventory: {exc}"
            ) from None
        return build_inventory(rows, _about(self.content), pages=pages)

    def close(self) -> None:
        """Log out and drop the connections: pyVim's Disconnect, without its extra
        RetrieveServiceContent round trip (we hold the content already)."""
        if self.si is None:
            return
        si, content, self.si, self.content = self.si, self.content, None, None
        try:
            if content is not None:
                content.sessionManager.Logout()
                si._stub.DropConnections()
            else:
                Disconnect(si)
        except Exception as exc:  # logging out must never mask the real outcome
            log.debug("vCenter logout failed: %s", exc)

    def __enter__(self) -> VSphereClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fault_error(exc: Any, during: str) -> AgentError:
    name = type(exc).__name__
    msg = getattr(exc, "msg", None) or str(exc)
    if isinstance(exc, vim.fault.NoPermission):
        return AuthError(
            f"vCenter refused the {during}: no permission ({msg}).",
            hint="Give the VCENTER_USER account at least the read-only role on the vCenter root, propagated.",
        )
    return RemoteError(f"vCenter {during} failed: {name}: {msg}", code=name, remote_message=msg)


__all__ = [
    "PROPERTY_PATHS",
    "AboutInfo",
    "ClusterInfo",
    "DatacenterInfo",
    "HostInfo",
    "Inventory",
    "VSphereClient",
    "build_inventory",
    "collect",
    "filter_spec",
    "retrieve_pages",
    "serial_from",
]
