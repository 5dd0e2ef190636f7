"""The executor's sink for the two syncs: direct PostgREST writes (service-role key) of exactly the
rows the edge functions write, plus the named reads the sync jobs need (connection settings, with
the password decrypted here, inside the executor).

The scripts deliver through the edge functions (lib/sync/edge.py); the openmanage_sync and
vcenter_sync jobs run the SAME sync functions (lib/sync/ome.sync_ome, lib/sync/vcenter.sync_vcenter)
with one of these senders instead. What each writes, mirrored from the functions
(lab/backend/functions/openmanage_sync.py, vcenter_sync.py, and CONTRACT.md sections 1 and 2):

- OME: `servers` upserted on service_tag (ip_address, openmanage_device_id, the optional inventory
  columns the device carries, overall_health, power_state, last_seen, last_openmanage_sync). A key a
  device leaves out is not in the request, so a stored value is never blanked (sync_ome batches
  devices by key set; rows of one request always carry the same keys). Then servers without a
  vCenter host are linked to vcenter_hosts whose serial_number is their service tag, both ways.
- vCenter: `vcenter_hosts` upserted on (vcenter_id, source_vcenter_id); a host row of the same
  moref that has no vcenter_id yet (written by the script without VCENTER_ID) is adopted, not
  duplicated; hosts are linked to the server whose service_tag equals the serial (both ways);
  `vcenters.last_sync`, `last_sync_status` (success|partial|failed), `last_sync_error`.
Nothing here ever deletes. Timestamps are the executor's UTC clock.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lib.dsm.credentials import DecryptError, decode_key, decrypt_password
from lib.dsm.rest import in_list
from lib.errors import ConfigError, RemoteError
from lib.logs import register_secret
from lib.sync.delivery import BatchOutcome
from lib.sync.edge import BATCH_REFUSED_STATUSES

if TYPE_CHECKING:
    from lib.dsm.rest import RestClient
    from lib.ome import Device
    from lib.vsphere import HostInfo

log = logging.getLogger(__name__)

# Device key -> servers column, for the columns a device may leave out (the function's _OPTIONAL).
OME_OPTIONAL = (
    "hostname",
    "model",
    "bios_version",
    "idrac_firmware",
    "cpu_count",
    "memory_gb",
    "overall_health",
    "power_state",
)
HOST_CONFLICT = "vcenter_id,source_vcenter_id"
URL_CHUNK = 100  # ids per in.(...) filter: keeps request URLs short


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _chunks(values: Sequence[str], size: int = URL_CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _select_in(
    rest: RestClient, table: str, column: str, values: Sequence[str], columns: str, **extra: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in _chunks(list(dict.fromkeys(values))):
        rows.extend(rest.select(table, {column: in_list(part), **extra}, columns=columns))
    return rows


def _refused(exc: RemoteError) -> BatchOutcome | None:
    """A refusal of this batch (a conflict, a bad value): fail it so `deliver` splits it. Anything
    else (auth, backend gone, schema missing) is not the batch's fault and ends the run."""
    if exc.status in BATCH_REFUSED_STATUSES and not getattr(exc, "schema_missing", False):
        return BatchOutcome.failed(exc.remote_message or exc.message)
    return None


# ---------------------------------------------------------------------------------------------------
# OME -> servers
# ---------------------------------------------------------------------------------------------------
def server_row(payload: Mapping[str, Any], stamp: str) -> dict[str, Any]:
    """One servers row from a Device payload, as openmanage-sync maps it."""
    row: dict[str, Any] = {
        "service_tag": str(payload["service_tag"]).strip(),
        "ip_address": str(payload["ip_address"]).strip(),
    }
    if payload.get("device_id") is not None:
        row["openmanage_device_id"] = str(payload["device_id"])
    for key in OME_OPTIONAL:
        if payload.get(key) is not None:  # left out, never null: the stored value stays
            row[key] = payload[key]
    row.update(last_seen=stamp, last_openmanage_sync=stamp, updated_at=stamp)
    return row


class OmeTableSink:
    """`send(batch)` for sync_ome: upsert the batch's servers rows, then auto-link them."""

    def __init__(self, rest: RestClient, clock: Callable[[], str] = now_iso) -> None:
        self.rest = rest
        self.clock = clock
        # Tags a refused batch created before its refusal (an earlier key-set group was committed):
        # `deliver` re-sends them while isolating the bad record, and they count as new then.
        self._uncounted_new: set[str] = set()
        self._lock = threading.Lock()  # deliver may call send from several threads

    def send(self, batch: list[Device]) -> BatchOutcome:
        stamp = self.clock()
        rows = [server_row(d.payload(), stamp) for d in batch]
        tags = [r["service_tag"] for r in rows]
        with self._lock:
            earlier_new = self._uncounted_new.intersection(tags)
            self._uncounted_new -= earlier_new
        existing = {
            r["service_tag"] for r in _select_in(self.rest, "servers", "service_tag", tags, "service_tag")
        } - earlier_new
        # one request per key set (sync_ome already batches by key set; this keeps the rule for any caller)
        groups: dict[frozenset[str], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(frozenset(row), []).append(row)
        committed: list[str] = []
        for group in groups.values():
            try:
                self.rest.upsert("servers", group, on_conflict="service_tag")
            except RemoteError as exc:
                refused = _refused(exc)
                with self._lock:  # the whole batch is reported refused: count these when re-sent
                    self._uncounted_new |= {t for t in committed if t not in existing}
                    self._uncounted_new |= earlier_new - set(committed)
                if refused is None:
                    raise
                return refused
            committed += [r["service_tag"] for r in group]
        new = sum(1 for t in tags if t not in existing)
        return BatchOutcome(ok=True, new=new, updated=len(tags) - new, auto_linked=self._auto_link(tags))

    def _auto_link(self, tags: Sequence[str]) -> int:
        """Servers of these tags without a vCenter host, linked to the host whose serial is their tag."""
        unlinked = _select_in(
            self.rest, "servers", "service_tag", tags, "id,service_tag", vcenter_host_id="is.null"
        )
        if not unlinked:
            return 0
        hosts = _select_in(
            self.rest,
            "vcenter_hosts",
            "serial_number",
            [s["service_tag"] for s in unlinked],
            "id,serial_number,server_id,created_at",
        )
        first: dict[str, dict[str, Any]] = {}
        for h in sorted(hosts, key=lambda h: str(h.get("created_at") or "")):
            first.setdefault(str(h["serial_number"]), h)
        linked = 0
        for server in unlinked:
            host = first.get(str(server["service_tag"]))
            if host is None:
                continue
            done = self.rest.update(
                "servers",
                {"id": f"eq.{server['id']}", "vcenter_host_id": "is.null"},  # linked meanwhile: keep
                {"vcenter_host_id": host["id"]},
                returning=True,
            )
            if not done:
                continue
            if host.get("server_id") is None:
                self.rest.update(
                    "vcenter_hosts",
                    {"id": f"eq.{host['id']}", "server_id": "is.null"},
                    {"server_id": server["id"]},
                )
            linked += 1
        return linked


# ---------------------------------------------------------------------------------------------------
# vCenter -> vcenter_hosts, vcenters
# ---------------------------------------------------------------------------------------------------
class VcenterTableSink:
    """`send(batch)` for sync_vcenter: upsert the batch's vcenter_hosts rows of one vCenter and link
    them to servers by serial = service_tag. Never deletes a host that left vCenter."""

    def __init__(self, rest: RestClient, vcenter_id: str, clock: Callable[[], str] = now_iso) -> None:
        self.rest = rest
        self.vcenter_id = vcenter_id
        self.clock = clock
        # moref -> (known, stored server_id) as first seen, for rows a refused batch committed
        # before its refusal: `deliver` re-sends them, and they are counted as they were then.
        self._uncounted: dict[str, tuple[bool, str | None]] = {}
        self._lock = threading.Lock()

    def send(self, batch: list[HostInfo]) -> BatchOutcome:
        from lib.sync.vcenter import host_payload  # the wire shape the edge function reads

        stamp = self.clock()
        payloads = [host_payload(h) for h in batch]
        morefs = [str(p["vcenter_id"]) for p in payloads]
        with self._lock:
            earlier = {m: self._uncounted.pop(m) for m in morefs if m in self._uncounted}
        known = self._adopt(morefs)
        for m, (was_known, server_id) in earlier.items():
            if was_known:
                known[m] = server_id
            else:
                known.pop(m, None)
        servers = self._servers_by_serial([p["serial_number"] for p in payloads if p["serial_number"]])
        with_server: list[dict[str, Any]] = []
        without: list[dict[str, Any]] = []
        for p in payloads:
            row = self._host_row(p, stamp)
            server = servers.get(str(p["serial_number"])) if p["serial_number"] else None
            if server is not None:
                row["server_id"] = server["id"]
                with_server.append(row)
            else:  # no matching server: server_id stays as stored (the key is not sent)
                without.append(row)
        saved: list[dict[str, Any]] = []
        for group in (with_server, without):
            if not group:
                continue
            try:
                saved += self.rest.upsert("vcenter_hosts", group, on_conflict=HOST_CONFLICT, returning=True)
            except RemoteError as exc:
                refused = _refused(exc)
                with self._lock:  # the whole batch is reported refused: count these when re-sent
                    for m in {str(r["source_vcenter_id"]) for r in saved} | set(earlier):
                        self._uncounted[m] = (m in known, known.get(m))
                if refused is None:
                    raise
                return refused
        linked = 0
        for row in saved:
            server = servers.get(str(row.get("serial_number"))) if row.get("serial_number") else None
            if server is None:
                continue
            if server.get("vcenter_host_id") != row["id"]:
                self.rest.update("servers", {"id": f"eq.{server['id']}"}, {"vcenter_host_id": row["id"]})
            linked += int(known.get(str(row["source_vcenter_id"])) is None)
        new = sum(1 for m in morefs if m not in known)
        return BatchOutcome(ok=True, new=new, updated=len(morefs) - new, auto_linked=linked)

    def _host_row(self, p: Mapping[str, Any], stamp: str) -> dict[str, Any]:
        moref = str(p["vcenter_id"])
        return {
            "vcenter_id": self.vcenter_id,
            "source_vcenter_id": moref,
            "name": p.get("name") or moref,
            "cluster": p.get("cluster"),
            "serial_number": p.get("serial_number"),
            "esxi_version": p.get("esxi_version"),
            "status": p.get("status"),
            "maintenance_mode": bool(p.get("maintenance_mode")),
            "last_sync": stamp,
            "updated_at": stamp,
        }

    def _adopt(self, morefs: Sequence[str]) -> dict[str, str | None]:
        """moref -> the server_id stored on this vCenter's row of that host (None: none or unlinked),
        for the hosts already known. A row of the same moref without a vcenter_id (written by the
        script without VCENTER_ID, which the edge function looks up by moref alone) becomes this
        vCenter's row instead of being duplicated."""
        rows = _select_in(
            self.rest,
            "vcenter_hosts",
            "source_vcenter_id",
            morefs,
            "id,vcenter_id,source_vcenter_id,server_id",
        )
        known: dict[str, str | None] = {}
        orphans: dict[str, str] = {}
        for r in rows:
            moref = str(r["source_vcenter_id"])
            if str(r.get("vcenter_id")) == self.vcenter_id:
                known[moref] = r.get("server_id")
            elif r.get("vcenter_id") is None:
                orphans.setdefault(moref, str(r["id"]))
        adopt = [row_id for moref, row_id in orphans.items() if moref not in known]
        for part in _chunks(adopt):
            self.rest.update("vcenter_hosts", {"id": in_list(part)}, {"vcenter_id": self.vcenter_id})
        for r in rows:
            if r.get("vcenter_id") is None and str(r["id"]) in adopt:
                known[str(r["source_vcenter_id"])] = r.get("server_id")
        return known

    def _servers_by_serial(self, serials: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = _select_in(
            self.rest, "servers", "service_tag", list(serials), "id,service_tag,vcenter_host_id"
        )
        return {str(r["service_tag"]): r for r in rows}


def record_vcenter_sync(rest: RestClient, vcenter_id: str, status: str, error: str | None) -> None:
    """vcenters.last_sync / last_sync_status (success|partial|failed) / last_sync_error."""
    if status not in ("success", "partial", "failed"):
        raise ValueError(f"bad last_sync_status {status!r}")
    rest.update(
        "vcenters",
        {"id": f"eq.{vcenter_id}"},
        {
            "last_sync": now_iso(),
            "last_sync_status": status,
            "last_sync_error": (error or None) and error[:2000],
        },
    )


# ---------------------------------------------------------------------------------------------------
# Connection settings from DSM's tables (the password decrypted here, never returned in a repr)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OmeConnection:
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    verify_ssl: bool
    sync_enabled: bool
    password_source: str  # "encrypted" or "plain" (never the value)


@dataclass(frozen=True)
class VcenterConnection:
    id: str
    name: str
    host: str
    port: int
    username: str | None
    verify_ssl: bool
    sync_enabled: bool
    password: str | None = field(repr=False)  # None when `problem` says why
    problem: str | None = None  # missing user/password, or the password does not decrypt

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host})"


def _looks_encrypted(value: str) -> bool:
    """base64 of whole AES blocks: what pgcrypto encrypt() stores (CONTRACT.md section 5)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= 16 and len(raw) % 16 == 0


def read_ome_connection(rest: RestClient, encryption_key: Callable[[], str | None]) -> OmeConnection:
    """The openmanage_settings row (the most recently updated one). Raises ConfigError naming the
    missing column. `password` may be stored plain or encrypted: a value that looks encrypted and
    decrypts with activity_settings.encryption_key is used decrypted, anything else as it is."""
    rows = rest.select(
        "openmanage_settings",
        columns="host,port,username,password,verify_ssl,sync_enabled",
        order="updated_at.desc",
        limit=1,
    )
    hint = "Enter the OpenManage Enterprise connection in DSM's settings (openmanage_settings)."
    if not rows:
        raise ConfigError("no OpenManage settings: the openmanage_settings table has no row", hint=hint)
    row = rows[0]
    missing = [c for c in ("host", "username", "password") if not str(row.get(c) or "").strip()]
    if missing:
        raise ConfigError(
            "OpenManage settings incomplete: "
            + ", ".join(f"openmanage_settings.{c} is not set" for c in missing),
            hint=hint,
        )
    stored = str(row["password"])
    password, source = stored, "plain"
    if _looks_encrypted(stored):
        raw_key = encryption_key()
        if raw_key:
            try:
                password, source = (
                    decrypt_password(stored, decode_key(raw_key), what="OpenManage password"),
                    "encrypted",
                )
            except DecryptError:
                log.warning(
                    "openmanage_settings.password looks encrypted but does not decrypt with "
                    "activity_settings.encryption_key: using it as a plain password"
                )
    register_secret(password)
    return OmeConnection(
        host=str(row["host"]).strip(),
        port=int(row.get("port") or 443),
        username=str(row["username"]).strip(),
        password=password,
        verify_ssl=row.get("verify_ssl") is not False,
        sync_enabled=bool(row.get("sync_enabled")),
        password_source=source,
    )


def read_vcenter_connections(
    rest: RestClient, ids: Sequence[str] | None, encryption_key: Callable[[], str | None]
) -> list[VcenterConnection]:
    """vcenters rows by id (any sync_enabled), or every row with sync_enabled when ids is None.
    Each password is decrypted (vcenters.password_encrypted); a vCenter whose password is missing
    or does not decrypt comes back with `problem` set, so the others still sync."""
    columns = "id,name,host,port,username,password_encrypted,verify_ssl,sync_enabled"
    if ids is None:
        rows = rest.select("vcenters", {"sync_enabled": "is.true"}, columns=columns, order="name")
    else:
        rows = _select_in(rest, "vcenters", "id", list(ids), columns) if ids else []
    key: bytes | None = None
    out: list[VcenterConnection] = []
    for row in rows:
        password, problem = None, None
        if not row.get("username"):
            problem = "vcenters.username is not set"
        elif not row.get("password_encrypted"):
            problem = "vcenters.password_encrypted is not set"
        else:
            try:
                key = key or decode_key(encryption_key())
                password = decrypt_password(
                    row["password_encrypted"], key, what=f"password of vCenter {row.get('name')!r}"
                )
            except ConfigError as exc:  # DecryptError, or no/bad encryption key
                problem = exc.message
        out.append(
            VcenterConnection(
                id=str(row["id"]),
                name=str(row.get("name") or row["host"]),
                host=str(row["host"]),
                port=int(row.get("port") or 443),
                username=row.get("username"),
                verify_ssl=row.get("verify_ssl") is not False,
                sync_enabled=bool(row.get("sync_enabled")),
                password=password,
                problem=problem,
            )
        )
    return out
