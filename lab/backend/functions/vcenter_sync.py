"""Edge function `vcenter-sync` (CONTRACT.md section 2).

Dual auth: the executor HMAC when its headers are present, else a Bearer user JWT (admin/operator).
Each host is looked up by its managed-object id (vcenter_hosts.source_vcenter_id) ALONE, updated or
inserted, and linked to the servers row whose service_tag equals its serial_number. Never deletes.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from ..postgrest import Response
from .common import (
    Reply,
    gateway_claims,
    has_signature,
    parse_json,
    reply,
    require_operator,
    require_signature,
    service_connection,
    timestamp,
)

if TYPE_CHECKING:
    from ..server import Backend

_FIELDS = ("name", "cluster", "serial_number", "esxi_version", "status", "maintenance_mode")


def _vcenter_uuid(conn: psycopg.Connection, value: Any) -> str | None:
    """body.vcenter_id names a vcenters row when it is the id of one; anything else is ignored."""
    if not value:
        return None
    try:
        uuid.UUID(str(value))
    except ValueError:
        return None
    row = conn.execute("SELECT id::text FROM public.vcenters WHERE id = %s", [str(value)]).fetchone()
    return row[0] if row else None


def _upsert_host(
    conn: psycopg.Connection, host: dict[str, Any], vcenter_uuid: str | None
) -> tuple[str, bool, bool]:
    """Returns (host id, inserted?, newly linked?)."""
    moid = str(host["vcenter_id"])
    values = {f: host.get(f) for f in _FIELDS}
    values["maintenance_mode"] = bool(values["maintenance_mode"])
    values["name"] = values["name"] or moid
    row = conn.execute(
        "SELECT id::text, server_id FROM public.vcenter_hosts WHERE source_vcenter_id = %s ORDER BY created_at LIMIT 1",
        [moid],
    ).fetchone()
    if row:
        host_id, had_server = row[0], row[1] is not None
        conn.execute(
            "UPDATE public.vcenter_hosts SET name = %s, cluster = %s, serial_number = %s, esxi_version = %s,"
            " status = %s, maintenance_mode = %s, vcenter_id = COALESCE(%s, vcenter_id), last_sync = now(),"
            " updated_at = now() WHERE id = %s",
            [*(values[f] for f in _FIELDS), vcenter_uuid, host_id],
        )
        inserted = False
    else:
        host_id = conn.execute(
            "INSERT INTO public.vcenter_hosts (source_vcenter_id, vcenter_id, name, cluster, serial_number,"
            " esxi_version, status, maintenance_mode, last_sync) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
            " RETURNING id::text",
            [moid, vcenter_uuid, *(values[f] for f in _FIELDS)],
        ).fetchone()[0]  # type: ignore[index]
        had_server, inserted = False, True
    linked = False
    serial = values["serial_number"]
    if serial:
        server = conn.execute(
            "SELECT id::text FROM public.servers WHERE service_tag = %s", [serial]
        ).fetchone()
        if server:
            conn.execute("UPDATE public.vcenter_hosts SET server_id = %s WHERE id = %s", [server[0], host_id])
            conn.execute(
                "UPDATE public.servers SET vcenter_host_id = %s WHERE id = %s AND vcenter_host_id IS DISTINCT FROM %s",
                [host_id, server[0], host_id],
            )
            linked = not had_server
    return host_id, inserted, linked


def handle(backend: Backend, headers: dict[str, str], body: bytes) -> Response:
    gateway = gateway_claims(backend, headers)
    payload = parse_json(body)
    with service_connection(backend) as conn:
        if has_signature(headers):
            require_signature(backend, headers, payload)
        else:
            require_operator(conn, gateway)
        if not isinstance(payload, dict) or not isinstance(payload.get("hosts", []), list):
            raise Reply(400, {"success": False, "error": "Invalid request: hosts must be a list"})
        hosts = payload.get("hosts") or []
        vcenter_uuid = _vcenter_uuid(conn, payload.get("vcenter_id"))
        new = updated = linked = 0
        errors: list[str] = []
        for host in hosts:
            if not isinstance(host, dict) or not host.get("vcenter_id"):
                errors.append(
                    f"Host {host.get('name') if isinstance(host, dict) else host}: missing vcenter_id"
                )
                continue
            try:
                with conn.transaction():
                    _id, inserted, newly_linked = _upsert_host(conn, host, vcenter_uuid)
            except psycopg.Error as exc:
                errors.append(f"Host {host.get('name')}: {exc.diag.message_primary or exc}")
                continue
            new += inserted
            updated += not inserted
            linked += newly_linked
        if vcenter_uuid:
            conn.execute(
                "UPDATE public.vcenters SET last_sync = now(), last_sync_status = %s, last_sync_error = %s WHERE id = %s",
                ["partial" if errors else "success", "; ".join(errors)[:2000] or None, vcenter_uuid],
            )
    summary = {
        "total": len(hosts),
        "new": new,
        "updated": updated,
        "auto_linked": linked,
        "errors": len(errors),
    }
    out: dict[str, Any] = {"success": True, "summary": summary, "timestamp": timestamp()}
    if errors:
        out["errors"] = errors
    return reply(200, out)
