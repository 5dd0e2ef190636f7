"""End to end: the real vcenter-sync-script.py as a subprocess against the lab vcsim (govmomi's
simulator with a real login and TLS) and the lab backend (vcenter-sync edge function, Supabase
Auth, PostgreSQL), checking the `vcenter_hosts` rows afterwards."""

from __future__ import annotations

import functools
import json
import math
import socket
import threading
import uuid

import pytest

from tests.e2e.sync_helpers import VCENTER_SCRIPT, report_of, run_script

run = functools.partial(run_script, VCENTER_SCRIPT)


@pytest.fixture
def dsm_user(clean_backend) -> dict[str, str]:
    email, password = f"ops-{uuid.uuid4().hex[:8]}@example.com", "Lab-" + uuid.uuid4().hex
    clean_backend.create_user(email, password, role="operator")
    return {
        "SUPABASE_URL": clean_backend.url,
        "SUPABASE_ANON_KEY": clean_backend.anon_key,
        "DSM_EMAIL": email,
        "DSM_PASSWORD": password,
    }


def hosts_rows(backend) -> dict[str, dict]:
    return {r["source_vcenter_id"]: r for r in backend.sql("select * from vcenter_hosts")}


def assert_rows_match_vcenter(rows: dict[str, dict], oracle: dict[str, dict]) -> None:
    assert set(rows) == {h["moref"] for h in oracle.values()}
    for name, h in oracle.items():
        row = rows[h["moref"]]
        assert row["name"] == name
        assert row["cluster"] == h["cluster"], name  # None for a standalone host
        assert row["serial_number"] == h["serial"], name  # serialNumber, or the ServiceTag fallback
        assert row["maintenance_mode"] == h["maintenance_mode"], name
        assert row["status"] == h["connection_state"].lower(), name
        assert row["esxi_version"] == "6.5.0 5969303"


# ---------------------------------------------------------------------------------------------------
# A full sync, a second one, linking
# ---------------------------------------------------------------------------------------------------
def test_full_sync_sends_hosts_clusters_datacenters_and_standalone_hosts(
    vcsim, clean_backend, dsm_user, tmp_path
):
    out = tmp_path / "body.json"
    proc = run(tmp_path, {**vcsim.env(), **dsm_user}, "--json", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rep = report_of(proc)
    oracle = vcsim.inventory()
    assert len(oracle) == 14  # 2 DC x 2 clusters x 3 hosts + 2 standalone
    assert (rep["seen"], rep["sent"], rep["new"], rep["updated"], rep["failed"]) == (14, 14, 14, 0, [])
    assert (
        rep["extra"]["datacenters"] == 2
        and rep["extra"]["clusters"] == 4
        and rep["extra"]["standalone_hosts"] == 2
    )
    assert rep["requests"]["vcenter"] <= 10 and rep["requests"]["dsm"] == 1

    rows = hosts_rows(clean_backend)
    assert_rows_match_vcenter(rows, oracle)
    assert sum(r["cluster"] is None for r in rows.values()) == 2
    assert {r["status"] for r in rows.values()} == {"connected", "disconnected"}
    # the host whose serialNumber field is empty was matched through otherIdentifyingInfo
    assert any(h["serial_number_field"] is None and h["serial"] for h in oracle.values())

    # datacenters and clusters travel in the body (the function stores hosts; these are for DSM)
    body = json.loads(out.read_text())
    assert {d["name"] for d in body["datacenters"]} == {"DC0", "DC1"}
    assert {c["name"]: c["datacenter"] for c in body["clusters"]} == {
        "DC0_C0": "DC0",
        "DC0_C1": "DC0",
        "DC1_C0": "DC1",
        "DC1_C1": "DC1",
    }
    assert {h["name"]: h["datacenter"] for h in body["hosts"]} == {
        n: h["datacenter"] for n, h in oracle.items()
    }
    assert all(c["host_count"] == 3 for c in body["clusters"])


def test_maintenance_mode_and_second_run_updates_without_deleting(vcsim, clean_backend, dsm_user, tmp_path):
    env = {**vcsim.env(), **dsm_user}
    assert run(tmp_path, env).returncode == 0
    first = hosts_rows(clean_backend)
    # a host DSM knows but vCenter no longer has: the sync must leave it alone
    clean_backend.sql(
        "insert into vcenter_hosts (source_vcenter_id, name, cluster, status) values ('host-9999', 'retired', 'old', 'connected')"
    )
    vcsim.enter_maintenance_mode("DC0_C1_H2")

    proc = run(tmp_path, env, "--json")
    assert proc.returncode == 0, proc.stderr
    rep = report_of(proc)
    assert (rep["new"], rep["updated"]) == (0, 14)
    second = hosts_rows(clean_backend)
    assert set(second) == set(first) | {"host-9999"}
    assert second["host-9999"]["name"] == "retired"
    assert all(second[m]["id"] == first[m]["id"] for m in first)  # updated in place, not re-created
    changed = {second[m]["name"] for m in first if second[m]["maintenance_mode"]}
    assert changed == {"DC0_C1_H2"}
    assert_rows_match_vcenter({m: r for m, r in second.items() if m != "host-9999"}, vcsim.inventory())


def test_hosts_are_linked_to_servers_by_service_tag(vcsim, clean_backend, dsm_user, tmp_path):
    oracle = vcsim.inventory()
    fallback = next(n for n, h in oracle.items() if h["serial_number_field"] is None)
    picked = sorted({fallback, "DC0_H0", "DC1_C0_H1"})
    for i, name in enumerate(picked):
        clean_backend.sql(
            "insert into servers (ip_address, service_tag, hostname) values (%s, %s, %s)",
            (f"192.168.77.{10 + i}", oracle[name]["serial"], f"idrac-{name}"),
        )
    proc = run(tmp_path, {**vcsim.env(), **dsm_user}, "--json")
    assert proc.returncode == 0, proc.stderr
    assert report_of(proc)["auto_linked"] == 3
    rows = hosts_rows(clean_backend)
    servers = {s["service_tag"]: s for s in clean_backend.sql("select * from servers")}
    for name in picked:
        row = rows[oracle[name]["moref"]]
        server = servers[oracle[name]["serial"]]
        assert row["server_id"] == server["id"] and server["vcenter_host_id"] == row["id"], name
    assert sum(r["server_id"] is not None for r in rows.values()) == 3


def test_batches_and_hmac_auth(vcsim, clean_backend, tmp_path):
    env = {
        **vcsim.env(VCENTER_BATCH_SIZE="4"),
        "SUPABASE_URL": clean_backend.url,
        "SUPABASE_ANON_KEY": clean_backend.anon_key,
        "EXECUTOR_SHARED_SECRET": clean_backend.executor_secret,
    }
    proc = run(tmp_path, env, "--json")
    assert proc.returncode == 0, proc.stderr
    rep = report_of(proc)
    assert rep["requests"]["dsm"] == math.ceil(14 / 4) and rep["new"] == 14
    assert len(hosts_rows(clean_backend)) == 14


# ---------------------------------------------------------------------------------------------------
# Failures an operator meets
# ---------------------------------------------------------------------------------------------------
def test_wrong_vcenter_password_exits_3_with_the_user_format_hint(vcsim, clean_backend, dsm_user, tmp_path):
    proc = run(tmp_path, {**vcsim.env(VCENTER_PASSWORD="wrong-password"), **dsm_user})
    assert proc.returncode == 3, proc.stderr
    assert "rejected the login" in proc.stderr and "@vsphere.local" in proc.stderr and "lock" in proc.stderr
    assert "wrong-password" not in proc.stderr
    assert hosts_rows(clean_backend) == {}


class ListeningSocket:
    """A loopback port that accepts and counts connections: proof that nobody called vCenter."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_wrong_dsm_password_exits_3_before_vcenter_is_touched(vcsim, dsm_user, tmp_path):
    fake_vcenter = ListeningSocket()
    try:
        env = {
            **vcsim.env(VCENTER_PORT=str(fake_vcenter.port)),
            **dsm_user,
            "DSM_PASSWORD": "not-the-password",
        }
        proc = run(tmp_path, env, "--json")
    finally:
        fake_vcenter.close()
    assert proc.returncode == 3, proc.stderr
    assert "DSM_EMAIL" in proc.stderr and "DSM_PASSWORD" in proc.stderr
    assert "not-the-password" not in proc.stderr + proc.stdout
    assert fake_vcenter.accepted == 0
    rep = report_of(proc)  # the report comes out on a fatal error too
    assert rep["status"] == "failed" and "DSM_EMAIL" in rep["error"] and rep["seen"] == 0


def test_wrong_hmac_secret_exits_3_before_vcenter_is_touched(vcsim, clean_backend, tmp_path):
    fake_vcenter = ListeningSocket()
    try:
        env = {
            **vcsim.env(VCENTER_PORT=str(fake_vcenter.port)),
            "SUPABASE_URL": clean_backend.url,
            "SUPABASE_ANON_KEY": clean_backend.anon_key,
            "EXECUTOR_SHARED_SECRET": "not-the-shared-secret",
        }
        proc = run(tmp_path, env)
    finally:
        fake_vcenter.close()
    assert proc.returncode == 3, proc.stderr
    assert "EXECUTOR_SHARED_SECRET" in proc.stderr and "not-the-shared-secret" not in proc.stderr
    assert fake_vcenter.accepted == 0  # the signed probe failed first
    assert hosts_rows(clean_backend) == {}


def test_untrusted_certificate_exits_4_naming_the_subject_and_the_variables(
    vcsim, clean_backend, dsm_user, tmp_path
):
    env = {**vcsim.env(), **dsm_user}
    del env["VCENTER_CA_BUNDLE"]
    proc = run(tmp_path, env)
    assert proc.returncode == 4, proc.stderr
    assert "CN=vcsim.dsm-lab.local" in proc.stderr
    assert "VCENTER_CA_BUNDLE" in proc.stderr and "VCENTER_VERIFY_SSL=false" in proc.stderr
    assert hosts_rows(clean_backend) == {}

    # the operator's two ways out: the CA bundle (every other test) or verification off, with a warning
    proc = run(tmp_path, {**env, "VCENTER_VERIFY_SSL": "false"}, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "verification is OFF" in proc.stderr
    assert len(hosts_rows(clean_backend)) == 14


def test_nothing_listening_exits_4(vcsim, dsm_user, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    proc = run(tmp_path, {**vcsim.env(VCENTER_PORT=str(closed_port)), **dsm_user})
    assert proc.returncode == 4, proc.stderr
    assert "refused" in proc.stderr and "VCENTER_PORT" in proc.stderr


def test_an_esxi_host_instead_of_vcenter_is_named_as_such(vcsim_factory, dsm_user, tmp_path):
    esx = vcsim_factory(esx=True)
    proc = run(tmp_path, {**esx.env(), **dsm_user})
    assert proc.returncode == 2, proc.stderr
    assert "is an ESXi host" in proc.stderr and "not a vCenter Server" in proc.stderr


def test_check_and_dry_run_send_nothing(vcsim, clean_backend, dsm_user, tmp_path):
    proc = run(tmp_path, {**vcsim.env(), **dsm_user}, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK   DSM credentials: signed in as" in proc.stdout
    assert "14 host(s) to sync" in proc.stdout
    proc = run(tmp_path, vcsim.env(), "--dry-run", "--json")  # no DSM settings needed
    assert proc.returncode == 0, proc.stderr
    assert report_of(proc)["dry_run"] is True
    assert hosts_rows(clean_backend) == {}
