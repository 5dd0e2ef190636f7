"""lib/sync/table_sink units against an in-memory PostgREST stand-in: a batch whose second key-set
group is refused after the first one was committed is counted right once `deliver` has isolated the
bad record, and auto-linking never overwrites a link made meanwhile."""

from __future__ import annotations

import re
import uuid
from typing import Any

from lib.errors import RemoteError
from lib.ome import Device
from lib.sync.delivery import deliver
from lib.sync.table_sink import OmeTableSink, VcenterTableSink
from lib.vsphere import HostInfo


def _in_values(value: str) -> list[str]:
    return re.findall(r'"((?:[^"\\]|\\.)*)"', value)


class FakeRest:
    """Tables as lists of dicts; a row whose key contains BAD is refused (HTTP 400) with its request."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {"servers": [], "vcenter_hosts": []}
        self.before_update: Any = None

    def _match(self, row: dict[str, Any], params: dict[str, str]) -> bool:
        for col, cond in params.items():
            value = row.get(col)
            if cond.startswith("in."):
                ok = str(value) in _in_values(cond)
            elif cond == "is.null":
                ok = value is None
            else:
                ok = cond.startswith("eq.") and str(value) == cond[3:]
            if not ok:
                return False
        return True

    def select(self, table: str, params: dict[str, str], *, columns: str = "*") -> list[dict[str, Any]]:
        return [dict(r) for r in self.tables[table] if self._match(r, params)]

    def upsert(self, table: str, rows: list[dict[str, Any]], *, on_conflict: str, returning: bool = False):
        if any("BAD" in str(r.get("service_tag") or r.get("source_vcenter_id")) for r in rows):
            raise RemoteError("refused", status=400, remote_message="value too long")
        keys = on_conflict.split(",")
        out = []
        for row in rows:
            stored = next((r for r in self.tables[table] if all(r.get(k) == row.get(k) for k in keys)), None)
            if stored is None:
                stored = {"id": str(uuid.uuid4()), "vcenter_host_id": None, "server_id": None}
                self.tables[table].append(stored)
            stored.update(row)
            out.append(dict(stored))
        return out if returning else []

    def update(self, table: str, filters: dict[str, str], values: dict[str, Any], *, returning: bool = False):
        if self.before_update is not None:
            self.before_update(table, filters, values)
        hit = [r for r in self.tables[table] if self._match(r, filters)]
        for r in hit:
            r.update(values)
        return [dict(r) for r in hit] if returning else []


def test_ome_batch_refused_after_its_first_group_was_committed_is_counted_once():
    rest = FakeRest()
    rest.tables["servers"].append(
        {"id": "s0", "service_tag": "OLD1", "ip_address": "x", "vcenter_host_id": None}
    )
    # two key sets in one batch: the first group (no model) is committed, the second is refused
    devices = [
        Device("1", "NEW1", "10.0.0.1"),
        Device("2", "OLD1", "10.0.0.2"),
        Device("3", "NEW2", "10.0.0.3", model="R650"),
        Device("4", "BAD01", "10.0.0.4", model="R650"),
    ]
    result = deliver(devices, OmeTableSink(rest).send, batch_size=10)
    assert [r.item.service_tag for r in result.failed] == ["BAD01"]
    assert (result.sent, result.new, result.updated) == (3, 2, 1)
    assert sorted(r["service_tag"] for r in rest.tables["servers"]) == ["NEW1", "NEW2", "OLD1"]


def host(moref: str, serial: str | None) -> HostInfo:
    fields = dict.fromkeys(HostInfo.__dataclass_fields__)
    fields.update(moref=moref, name=f"esx-{moref}", serial_number=serial, maintenance_mode=False)
    return HostInfo(**fields)


def test_vcenter_batch_refused_after_its_first_group_was_committed_is_counted_once():
    rest = FakeRest()
    rest.tables["servers"].append({"id": "srv-1", "service_tag": "TAG1", "vcenter_host_id": None})
    hosts = [
        host("host-1", "TAG1"),  # with a server: the first group, committed
        host("host-2", None),
        host("host-BAD", None),  # refused, with its group
    ]
    result = deliver(hosts, VcenterTableSink(rest, "vc-1").send, batch_size=10)
    assert [r.item.moref for r in result.failed] == ["host-BAD"]
    assert (result.sent, result.new, result.updated, result.auto_linked) == (2, 2, 0, 1)
    assert rest.tables["servers"][0]["vcenter_host_id"] is not None


def test_auto_link_keeps_a_link_made_meanwhile():
    rest = FakeRest()
    rest.tables["servers"].append(
        {"id": "s1", "service_tag": "TAG9", "ip_address": "x", "vcenter_host_id": None}
    )
    rest.tables["vcenter_hosts"].append(
        {"id": "h-new", "serial_number": "TAG9", "server_id": None, "created_at": "2026-01-01"}
    )

    def someone_links_first(table: str, filters: dict[str, str], values: dict[str, Any]) -> None:
        if table == "servers" and "vcenter_host_id" in values:
            rest.tables["servers"][0]["vcenter_host_id"] = "h-linked-by-vcenter-sync"

    rest.before_update = someone_links_first
    outcome = OmeTableSink(rest).send([Device("9", "TAG9", "10.0.0.9")])
    assert outcome.ok and outcome.auto_linked == 0
    assert rest.tables["servers"][0]["vcenter_host_id"] == "h-linked-by-vcenter-sync"
    assert rest.tables["vcenter_hosts"][0]["server_id"] is None
