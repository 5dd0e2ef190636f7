"""Edge functions openmanage-sync, vcenter-sync and update-job: auth rules, writes, replies, traps."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from lab.backend.launcher import BackendProcess
from lib.dsm.signing import canonical_json, sign


def fn(b: BackendProcess, name: str) -> str:
    return f"{b.url}/functions/v1/{name}"


def token_headers(b: BackendProcess, token: str) -> dict[str, str]:
    return {"apikey": b.anon_key, "Authorization": f"Bearer {b.anon_key}", "X-API-Token": token}


def signed(
    b: BackendProcess, body: dict, *, ts: int | None = None, secret: str | None = None
) -> dict[str, str]:
    return {
        "apikey": b.anon_key,
        "Authorization": f"Bearer {b.anon_key}",
        "Content-Type": "application/json",
        **sign(body, secret or b.executor_secret, ts),
    }


def user_token(b: BackendProcess, email: str, role: str | None) -> str:
    b.create_user(email, "pw-123456", role)
    r = requests.post(
        f"{b.url}/auth/v1/token?grant_type=password",
        json={"email": email, "password": "pw-123456"},
        headers={"apikey": b.anon_key},
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def device(i: int, **kw) -> dict:
    return {
        "device_id": str(1000 + i),
        "service_tag": f"ST{i:03d}",
        "ip_address": f"192.168.1.{i}",
        "model": "PowerEdge R750",
        "hostname": f"h{i}",
        "cpu_count": 2,
        "memory_gb": 256,
        "overall_health": "OK",
        "power_state": "On",
        **kw,
    }


@pytest.fixture
def api_token(clean_backend: BackendProcess) -> str:
    return clean_backend.create_api_token("ome")


def test_openmanage_sync_inserts_then_updates(clean_backend: BackendProcess, api_token: str) -> None:
    b = clean_backend
    r = requests.post(
        fn(b, "openmanage-sync"),
        json={"devices": [device(1), device(2)]},
        headers=token_headers(b, api_token),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["errors"] == []
    assert body["summary"] == {"total": 2, "new": 2, "updated": 0, "auto_linked": 0, "errors": 0}
    assert "timestamp" in body
    r = requests.post(
        fn(b, "openmanage-sync"),
        json={"devices": [device(1, hostname="renamed")]},
        headers=token_headers(b, api_token),
    )
    assert r.json()["summary"]["updated"] == 1 and r.json()["summary"]["new"] == 0
    rows = b.sql("SELECT service_tag, hostname, openmanage_device_id, overall_health FROM servers ORDER BY 1")
    assert rows == [
        {
            "service_tag": "ST001",
            "hostname": "renamed",
            "openmanage_device_id": "1001",
            "overall_health": "OK",
        },
        {"service_tag": "ST002", "hostname": "h2", "openmanage_device_id": "1002", "overall_health": "OK"},
    ]


def test_openmanage_sync_trap_ip_clash_fails_whole_batch(
    clean_backend: BackendProcess, api_token: str
) -> None:
    b = clean_backend
    b.sql("INSERT INTO servers (ip_address, service_tag) VALUES ('192.168.1.2', 'OTHER')")
    r = requests.post(
        fn(b, "openmanage-sync"),
        json={"devices": [device(1), device(2)]},
        headers=token_headers(b, api_token),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True  # the trap: still success
    assert body["summary"]["new"] == 2  # counted as if saved
    assert any(e.startswith("Bulk upsert failed:") for e in body["errors"])
    assert b.sql("SELECT count(*) AS n FROM servers")[0]["n"] == 1  # nothing of the batch was saved


def test_openmanage_sync_duplicate_tag_fails_batch(clean_backend: BackendProcess, api_token: str) -> None:
    b = clean_backend
    r = requests.post(
        fn(b, "openmanage-sync"),
        json={"devices": [device(1), device(2, service_tag="ST001")]},
        headers=token_headers(b, api_token),
    )
    assert r.status_code == 200 and r.json()["success"] is True
    assert any(e.startswith("Bulk upsert failed:") for e in r.json()["errors"])
    assert b.sql("SELECT count(*) AS n FROM servers")[0]["n"] == 0


def test_openmanage_sync_skips_incomplete_and_rejects_empty(
    clean_backend: BackendProcess, api_token: str
) -> None:
    b = clean_backend
    r = requests.post(
        fn(b, "openmanage-sync"),
        json={"devices": [device(1), {"device_id": "9", "service_tag": "X"}]},
        headers=token_headers(b, api_token),
    )
    assert r.status_code == 200
    assert r.json()["summary"]["errors"] == 1 and len(r.json()["errors"]) == 1
    r = requests.post(fn(b, "openmanage-sync"), json={"devices": []}, headers=token_headers(b, api_token))
    assert r.status_code == 400


def test_openmanage_sync_auth(clean_backend: BackendProcess) -> None:
    b = clean_backend
    body = {"devices": [device(1)]}
    assert requests.post(fn(b, "openmanage-sync"), json=body).status_code == 401  # gateway: no JWT
    r = requests.post(fn(b, "openmanage-sync"), json=body, headers=token_headers(b, "wrong"))
    assert r.status_code == 401
    anon = {"apikey": b.anon_key, "Authorization": f"Bearer {b.anon_key}"}
    assert requests.post(fn(b, "openmanage-sync"), json=body, headers=anon).status_code == 401
    viewer = user_token(b, f"v{uuid.uuid4().hex[:6]}@lab", "viewer")
    r = requests.post(
        fn(b, "openmanage-sync"),
        json=body,
        headers={"apikey": b.anon_key, "Authorization": f"Bearer {viewer}"},
    )
    assert r.status_code == 403
    op = user_token(b, f"o{uuid.uuid4().hex[:6]}@lab", "operator")
    r = requests.post(
        fn(b, "openmanage-sync"), json=body, headers={"apikey": b.anon_key, "Authorization": f"Bearer {op}"}
    )
    assert r.status_code == 200 and r.json()["summary"]["new"] == 1


def test_vcenter_sync_links_and_never_deletes(clean_backend: BackendProcess) -> None:
    b = clean_backend
    sid = b.sql(
        "INSERT INTO servers (ip_address, service_tag) VALUES ('10.1.1.1', 'SN1') RETURNING id::text"
    )[0]["id"]
    hosts = [
        {
            "name": "esx1",
            "cluster": "C1",
            "vcenter_id": "host-1",
            "serial_number": "SN1",
            "esxi_version": "8.0.2 22380479",
            "status": "connected",
            "maintenance_mode": False,
        },
        {
            "name": "esx2",
            "cluster": "C1",
            "vcenter_id": "host-2",
            "serial_number": None,
            "esxi_version": "8.0.2 22380479",
            "status": "disconnected",
            "maintenance_mode": True,
        },
    ]
    body = {"hosts": hosts, "clusters": [], "datacenters": []}
    r = requests.post(fn(b, "vcenter-sync"), json=body, headers=signed(b, body))
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == {"total": 2, "new": 2, "updated": 0, "auto_linked": 1, "errors": 0}
    linked = b.sql(
        "SELECT h.server_id::text AS sid, s.vcenter_host_id = h.id AS back FROM vcenter_hosts h "
        "JOIN servers s ON s.id = h.server_id WHERE h.source_vcenter_id = 'host-1'"
    )
    assert linked == [{"sid": sid, "back": True}]
    body2 = {"hosts": [{**hosts[1], "status": "connected"}]}
    r = requests.post(fn(b, "vcenter-sync"), json=body2, headers=signed(b, body2))
    assert r.json()["summary"]["updated"] == 1 and r.json()["summary"]["new"] == 0
    rows = b.sql("SELECT source_vcenter_id, status FROM vcenter_hosts ORDER BY 1")
    assert rows == [
        {"source_vcenter_id": "host-1", "status": "connected"},
        {"source_vcenter_id": "host-2", "status": "connected"},
    ]  # host-1 kept


def test_vcenter_sync_auth(clean_backend: BackendProcess) -> None:
    b = clean_backend
    body = {"hosts": []}
    r = requests.post(fn(b, "vcenter-sync"), json=body, headers=signed(b, body, secret="wrong"))
    assert r.status_code == 401
    r = requests.post(fn(b, "vcenter-sync"), json=body, headers=signed(b, body, ts=int(time.time()) - 400))
    assert r.status_code == 401
    tampered = signed(b, body)
    r = requests.post(fn(b, "vcenter-sync"), json={"hosts": [{"vcenter_id": "host-9"}]}, headers=tampered)
    assert r.status_code == 401
    viewer = user_token(b, f"v{uuid.uuid4().hex[:6]}@lab", "viewer")
    r = requests.post(
        fn(b, "vcenter-sync"), json=body, headers={"apikey": b.anon_key, "Authorization": f"Bearer {viewer}"}
    )
    assert r.status_code == 403
    admin = user_token(b, f"a{uuid.uuid4().hex[:6]}@lab", "admin")
    r = requests.post(
        fn(b, "vcenter-sync"), json=body, headers={"apikey": b.anon_key, "Authorization": f"Bearer {admin}"}
    )
    assert r.status_code == 200 and r.json()["success"] is True


def test_signature_uses_js_canonical_json(clean_backend: BackendProcess) -> None:
    """Non-ASCII and integral floats: the server verifies over the JavaScript form."""
    b = clean_backend
    jid = b.sql("INSERT INTO jobs (job_type, status) VALUES ('health_check', 'running') RETURNING id::text")[
        0
    ]["id"]
    body = {"job": {"id": jid, "details": {"current_step": "Prüfung", "progress_percent": 50.0}}}
    assert '"progress_percent":50' in canonical_json(body)
    r = requests.post(fn(b, "update-job"), data=canonical_json(body).encode(), headers=signed(b, body))
    assert r.status_code == 200, r.text
    assert b.sql("SELECT details FROM jobs")[0]["details"] == {
        "current_step": "Prüfung",
        "progress_percent": 50,
    }


def test_update_job_merges_and_guards_terminal(clean_backend: BackendProcess) -> None:
    b = clean_backend
    jid = b.sql(
        "INSERT INTO jobs (job_type, status, details) VALUES ('power_action', 'running', "
        '\'{"action": "On"}\') RETURNING id::text'
    )[0]["id"]
    sid = b.sql("INSERT INTO servers (ip_address) VALUES ('10.2.2.2') RETURNING id::text")[0]["id"]
    body = {
        "job": {
            "id": jid,
            "status": "completed",
            "details": {"progress_percent": 100},
            "completed_at": "2026-01-01T00:00:00Z",
        },
        "tasks": [{"server_id": sid, "status": "completed", "progress": 100, "log": "done"}],
    }
    r = requests.post(fn(b, "update-job"), json=body, headers=signed(b, body))
    assert r.status_code == 200 and r.json()["success"] is True
    job = b.sql("SELECT status::text, details FROM jobs")[0]
    assert job == {"status": "completed", "details": {"action": "On", "progress_percent": 100}}
    assert b.sql("SELECT status::text, progress FROM job_tasks") == [{"status": "completed", "progress": 100}]
    again = {"job": {"id": jid, "status": "running"}}
    r = requests.post(fn(b, "update-job"), json=again, headers=signed(b, again))
    assert r.status_code == 409
    assert b.sql("SELECT status::text FROM jobs")[0]["status"] == "completed"
    missing = {"job": {"id": str(uuid.uuid4()), "status": "running"}}
    assert requests.post(fn(b, "update-job"), json=missing, headers=signed(b, missing)).status_code == 404
    r = requests.post(
        fn(b, "update-job"),
        json=again,
        headers={"apikey": b.anon_key, "Authorization": f"Bearer {b.anon_key}"},
    )
    assert r.status_code == 401
