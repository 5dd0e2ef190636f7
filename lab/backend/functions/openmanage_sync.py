"""Edge function `openmanage-sync` (CONTRACT.md section 1), including its failure modes.

One upsert statement per request on servers(service_tag): an IP clash with another row, or the same
service tag twice in one request, fails the WHOLE batch. The TRAP is kept on purpose: the reply is
still 200 with success=true and new/updated counted as if saved; the only sign is an errors entry
starting with "Bulk upsert failed:".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from ..postgrest import Response
from .common import (
    Reply,
    check_api_token,
    gateway_claims,
    parse_json,
    reply,
    require_operator,
    service_connection,
    timestamp,
)

if TYPE_CHECKING:
    from ..server import Backend

# Device key -> servers column. Optional columns keep the stored value when a device omits them.
_OPTIONAL = {
    "hostname": "hostname",
    "model": "model",
    "bios_version": "bios_version",
    "idrac_firmware": "idrac_firmware",
    "cpu_count": "cpu_count",
    "memory_gb": "memory_gb",
    "overall_health": "overall_health",
    "power_state": "power_state",
}


def _authenticate(backend: Backend, conn: psycopg.Connection, headers: dict[str, str]) -> None:
    claims = gateway_claims(backend, headers)
    token = headers.get("x-api-token")
    if token:
        if not check_api_token(conn, token):
            raise Reply(401, {"error": "Invalid or expired API token"})
        return
    require_operator(conn, claims)


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _row(device: dict[str, Any]) -> dict[str, Any]:
    row = {
        "service_tag": str(device["service_tag"]).strip(),
        "ip_address": str(device["ip_address"]).strip(),
        "openmanage_device_id": None if device.get("device_id") is None else str(device["device_id"]),
    }
    for key, col in _OPTIONAL.items():
        value = device.get(key)
        row[col] = _int_or_none(value) if key in ("cpu_count", "memory_gb") else value
    return row


_UPSERT = """
INSERT INTO public.servers AS s
  (service_tag, ip_address, openmanage_device_id, hostname, model, bios_version, idrac_firmware,
   cpu_count, memory_gb, overall_health, power_state, last_seen, last_openmanage_sync)
SELECT service_tag, ip_address, openmanage_device_id, hostname, model, bios_version, idrac_firmware,
       cpu_count, memory_gb, overall_health, power_state, now(), now()
  FROM json_populate_recordset(NULL::public.servers, %s::json)
ON CONFLICT (service_tag) DO UPDATE SET
  ip_address = EXCLUDED.ip_address,
  openmanage_device_id = COALESCE(EXCLUDED.openmanage_device_id, s.openmanage_device_id),
  hostname = COALESCE(EXCLUDED.hostname, s.hostname),
  model = COALESCE(EXCLUDED.model, s.model),
  bios_version = COALESCE(EXCLUDED.bios_version, s.bios_version),
  idrac_firmware = COALESCE(EXCLUDED.idrac_firmware, s.idrac_firmware),
  cpu_count = COALESCE(EXCLUDED.cpu_count, s.cpu_count),
  memory_gb = COALESCE(EXCLUDED.memory_gb, s.memory_gb),
  overall_health = COALESCE(EXCLUDED.overall_health, s.overall_health),
  power_state = COALESCE(EXCLUDED.power_state, s.power_state),
  last_seen = now(),
  last_openmanage_sync = now(),
  updated_at = now()
"""

# Link servers to vCenter hosts whose serial number is the service tag (both directions).
_AUTO_LINK = """
WITH pairs AS (
  SELECT s.id AS server_id, h.id AS host_id
    FROM public.servers s
    JOIN public.vcenter_hosts h ON h.serial_number = s.service_tag
   WHERE s.service_tag = ANY(%s) AND s.vcenter_host_id IS NULL
), upd_s AS (
  UPDATE public.servers s SET vcenter_host_id = p.host_id FROM pairs p WHERE s.id = p.server_id RETURNING s.id
), upd_h AS (
  UPDATE public.vcenter_hosts h SET server_id = p.server_id FROM pairs p
   WHERE h.id = p.host_id AND h.server_id IS NULL RETURNING h.id
)
SELECT (SELECT count(*) FROM upd_s), (SELECT count(*) FROM upd_h)
"""


def handle(backend: Backend, headers: dict[str, str], body: bytes) -> Response:
    with service_connection(backend) as conn:
        _authenticate(backend, conn, headers)
        payload = parse_json(body)
        devices = payload.get("devices") if isinstance(payload, dict) else None
        if not isinstance(devices, list) or not devices:
            raise Reply(400, {"success": False, "error": "No devices provided"})
        errors: list[str] = []
        rows: list[dict[str, Any]] = []
        for device in devices:
            if not isinstance(device, dict):
                errors.append("Device entry is not an object")
                continue
            if not device.get("service_tag") or not device.get("ip_address"):
                errors.append(
                    f"Device {device.get('device_id', 'unknown')}: missing service tag or IP address"
                )
                continue
            rows.append(_row(device))
        tags = [r["service_tag"] for r in rows]
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT service_tag FROM public.servers WHERE service_tag = ANY(%s)", [tags]
            )
        }
        new = sum(1 for t in tags if t not in existing)
        updated = len(tags) - new
        auto_linked = 0
        if rows:
            import json

            try:
                with conn.transaction():
                    conn.execute(_UPSERT, [json.dumps(rows)])
            except psycopg.Error as exc:
                # The real function logs and carries on: counts stay as if it had worked.
                errors.append(f"Bulk upsert failed: {exc.diag.message_primary or exc}")
            with conn.transaction():
                linked_s, _linked_h = conn.execute(_AUTO_LINK, [tags]).fetchone()  # type: ignore[misc]
                auto_linked = int(linked_s)
    summary = {
        "total": len(devices),
        "new": new,
        "updated": updated,
        "auto_linked": auto_linked,
        "errors": len(errors),
    }
    return reply(200, {"success": True, "summary": summary, "errors": errors, "timestamp": timestamp()})
