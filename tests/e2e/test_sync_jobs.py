"""openmanage_sync and vcenter_sync as executor jobs, end to end: a job row inserted as the DSM UI
does, claimed and run by a real `job-executor.py --once` process against the lab backend (real
PostgreSQL behind the PostgREST stand-in), the lab OME simulator and vcsim.

The reference for what the jobs must write is the scripts: the same fleet is synced once by the
script through the edge function and once by the job through direct table writes, on a reset
backend, and the rows are compared."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from lib.dsm.credentials import encrypt_password
from tests.e2e.sync_helpers import OME_SCRIPT, VCENTER_SCRIPT, report_of, run_script
from tests.executor.helpers import Executor, job, wait_until

KEY = os.urandom(32)
KEY_B64 = base64.b64encode(KEY).decode()
PAGE = 50
# servers columns both sinks write (timestamps are compared as "set", not by value)
SERVER_COLUMNS = (
    "ip_address",
    "hostname",
    "model",
    "idrac_firmware",
    "bios_version",
    "cpu_count",
    "memory_gb",
    "power_state",
    "overall_health",
    "openmanage_device_id",
    "manufacturer",
    "notes",
)
HOST_COLUMNS = ("name", "cluster", "serial_number", "esxi_version", "status", "maintenance_mode")


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def run_executor(backend: Any, tmp_path: Path, **env: str) -> Executor:
    """`job-executor.py --once` with the production handler table only; returns after it exits."""
    ex = Executor(backend, f"executor-sync-{time.monotonic_ns()}", tmp_path, "--once", **executor_env(env))
    code = ex.wait(180)
    assert code == 0, ex.output
    return ex


def executor_env(env: dict[str, str]) -> dict[str, str]:
    return {"EXECUTOR_EXTRA_HANDLERS": "", "OME_PAGE_SIZE": str(PAGE), **env}


def seed_key(backend: Any) -> None:
    backend.sql("INSERT INTO activity_settings (encryption_key) VALUES (%s)", (KEY_B64,))


def seed_ome_settings(
    backend: Any, sim: Any, *, password: str | None = "ENCRYPTED", sync_enabled: bool = True
) -> None:
    stored = encrypt_password(sim.password, KEY) if password == "ENCRYPTED" else password
    backend.sql(
        "INSERT INTO openmanage_settings (host, port, username, password, verify_ssl, sync_enabled)"
        " VALUES (%s, %s, %s, %s, true, %s)",
        ("127.0.0.1", sim.port, sim.username, stored, sync_enabled),
    )


def insert_job(backend: Any, job_type: str, *, scope: Any = None, details: Any = None) -> str:
    return str(
        backend.sql(
            "INSERT INTO jobs (job_type, status, target_scope, details) VALUES (%s, 'pending', %s, %s) RETURNING id",
            (
                job_type,
                json.dumps(scope) if scope is not None else None,
                json.dumps(details) if details is not None else None,
            ),
        )[0]["id"]
    )


def job_blob(backend: Any, job_id: str) -> str:
    """Everything a user can read about a job: its row, its task rows and its step rows."""
    rows = [
        job(backend, job_id),
        *backend.sql("SELECT * FROM job_tasks WHERE job_id = %s", (job_id,)),
        *backend.sql("SELECT * FROM workflow_executions WHERE job_id = %s", (job_id,)),
    ]
    return json.dumps(rows, default=str)


def servers_by_tag(backend: Any) -> dict[str, dict]:
    return {r["service_tag"]: r for r in backend.sql("SELECT * FROM servers")}


def comparable_servers(backend: Any) -> dict[str, dict]:
    hosts = {str(r["id"]): r["source_vcenter_id"] for r in backend.sql("SELECT * FROM vcenter_hosts")}
    out = {}
    for tag, row in servers_by_tag(backend).items():
        out[tag] = {c: row[c] for c in SERVER_COLUMNS}
        out[tag]["vcenter_host"] = hosts.get(str(row["vcenter_host_id"]))
        out[tag]["synced"] = row["last_seen"] is not None and row["last_openmanage_sync"] is not None
    return out


def ome_env(sim: Any) -> dict[str, str]:
    return {
        "OME_HOST": sim.host,
        "OME_PORT": str(sim.port),
        "OME_USERNAME": sim.username,
        "OME_PASSWORD": sim.password,
        "OME_CA_BUNDLE": sim.ca_file,
        "OME_PAGE_SIZE": str(PAGE),
    }


def seed_ome_fixtures(backend: Any, sim: Any) -> None:
    """What DSM may hold already: a server row of an OME device with a stale address and a column
    OME never sends (kept), and a vCenter host whose serial is an OME service tag (linked)."""
    backend.sql(
        "INSERT INTO servers (ip_address, service_tag, idrac_firmware, notes) VALUES ('stale', 'NOIDRAC', '5.10.00.00', 'kept')"
    )
    tag = next(d["DeviceServiceTag"] for d in sim.fleet.servers()[10:] if d["DeviceServiceTag"])
    backend.sql(
        "INSERT INTO vcenter_hosts (source_vcenter_id, name, serial_number) VALUES ('host-77', 'esx77', %s)",
        (tag,),
    )


# ---------------------------------------------------------------------------------------------------
# openmanage_sync
# ---------------------------------------------------------------------------------------------------
def test_openmanage_job_writes_what_the_script_writes(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(180)

    # 1. the script, through the openmanage-sync edge function
    seed_ome_fixtures(backend, sim)
    env = {
        **ome_env(sim),
        "SUPABASE_URL": backend.url,
        "SUPABASE_ANON_KEY": backend.anon_key,
        "DSM_API_TOKEN": backend.create_api_token(),
    }
    proc = run_script(OME_SCRIPT, tmp_path, env, "--json", "--inventory", "--batch-size", "64")
    assert proc.returncode == 0, proc.stderr
    script_report = report_of(proc)
    by_script = comparable_servers(backend)

    # 2. the job, through direct table writes, on a reset backend with the same starting rows
    backend.reset()
    seed_ome_fixtures(backend, sim)
    seed_key(backend)
    seed_ome_settings(backend, sim)  # the password encrypted with activity_settings.encryption_key
    job_id = insert_job(backend, "openmanage_sync", details={"inventory": True})
    ex = run_executor(backend, tmp_path, OME_CA_BUNDLE=sim.ca_file, OME_BATCH_SIZE="64")
    row = job(backend, job_id)
    assert row["status"] == "completed", row["details"]
    by_job = comparable_servers(backend)
    assert sim.password not in ex.output  # nor in the executor's own log

    assert by_job == by_script
    assert by_job["NOIDRAC"]["notes"] == "kept" and by_job["NOIDRAC"]["ip_address"] != "stale"
    assert sum(1 for r in by_job.values() if r["vcenter_host"] == "host-77") == 1
    linked = backend.sql("SELECT server_id FROM vcenter_hosts WHERE source_vcenter_id = 'host-77'")
    assert linked[0]["server_id"] is not None
    result = row["details"]["result"]
    for key in ("seen", "sent", "new", "updated", "auto_linked", "status", "skipped", "failed"):
        assert result[key] == script_report[key], key
    assert result["status"] == "success" and result["sent"] == len(by_job) > 100
    log = "\n".join(row["details"]["console_log"])
    assert "OME pages read: 4 of 4" in log and "batch of" in log
    assert row["details"]["progress_percent"] == 100
    # no password anywhere a user can read, in plain or encrypted form
    blob = job_blob(backend, job_id)
    assert sim.password not in blob and encrypt_password(sim.password, KEY) not in blob
    assert '"step_name": "sync OpenManage devices into servers"' in blob  # step rows are scanned too
    assert sim.stats()["open_sessions"] == 0

    # a second job (without inventory) updates, creates nothing, deletes nothing, and blanks none of
    # the BIOS/CPU/memory values the first one stored (its requests do not carry those keys)
    assert sum(1 for r in by_job.values() if r["bios_version"] and r["memory_gb"]) > 100
    again = insert_job(backend, "openmanage_sync")
    run_executor(backend, tmp_path, OME_CA_BUNDLE=sim.ca_file)
    second = job(backend, again)
    assert second["status"] == "completed", second["details"]
    assert (second["details"]["result"]["new"], second["details"]["result"]["updated"]) == (0, result["sent"])
    assert comparable_servers(backend) == by_job


def test_openmanage_job_preflight_failures_name_what_is_missing(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(20)
    seed_key(backend)

    def run_one(details: Any = None) -> dict:
        job_id = insert_job(backend, "openmanage_sync", details=details)
        run_executor(backend, tmp_path, OME_CA_BUNDLE=sim.ca_file)
        row = job(backend, job_id)
        assert row["status"] == "failed", row["details"]
        assert sim.password not in job_blob(backend, job_id)
        return row["details"]

    d = run_one()
    assert d["phase"] == "preflight" and "openmanage_settings" in d["error"] and "no row" in d["error"]

    seed_ome_settings(backend, sim, password=None)
    d = run_one()
    assert d["phase"] == "preflight" and "openmanage_settings.password is not set" in d["error"]

    backend.sql("DELETE FROM openmanage_settings")
    seed_ome_settings(backend, sim, sync_enabled=False)
    d = run_one()
    assert d["phase"] == "preflight" and "sync_enabled" in d["error"] and "details.force" in d["hint"]

    d = run_one({"force": "yes"})
    assert d["phase"] == "preflight" and d["invalid_field"] == "details.force"
    assert sim.stats()["sessions_created"] == 0  # nothing above reached OME
    assert servers_by_tag(backend) == {}


def test_openmanage_job_wrong_password_fails_with_the_hint(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(20)
    seed_key(backend)
    wrong = "Wrong-Pa55-" + os.urandom(4).hex()
    seed_ome_settings(backend, sim, password=wrong, sync_enabled=False)  # stored plain
    job_id = insert_job(backend, "openmanage_sync", details={"force": True})
    run_executor(backend, tmp_path, OME_CA_BUNDLE=sim.ca_file)
    d = job(backend, job_id)["details"]
    assert "OME login failed" in d["error"] and d["phase"] == "execute"
    assert "OpenManage settings" in d["hint"] and "password" in d["hint"]
    assert d["result"]["status"] == "failed" and d["result"]["sent"] == 0
    assert wrong not in job_blob(backend, job_id)
    assert servers_by_tag(backend) == {}


def test_openmanage_job_untrusted_certificate_names_the_ca_variable(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(10)
    seed_key(backend)
    seed_ome_settings(backend, sim)
    job_id = insert_job(backend, "openmanage_sync")
    run_executor(backend, tmp_path)  # no OME_CA_BUNDLE: the simulator's private CA is unknown
    d = job(backend, job_id)["details"]
    assert job(backend, job_id)["status"] == "failed"
    assert "OME_CA_BUNDLE" in d["hint"] and "verify_ssl" in d["hint"]


def test_openmanage_job_partial_sync_saves_the_rest_and_lists_the_failures(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(150)
    victim = next(d for d in sim.fleet.servers()[20:] if d["DeviceServiceTag"])
    ip = next(
        m["NetworkAddress"] for m in victim["DeviceManagement"] if m["NetworkAddress"] not in ("[::]", "")
    )
    backend.sql("INSERT INTO servers (ip_address, service_tag) VALUES (%s, 'OTHER01')", (ip,))
    seed_key(backend)
    seed_ome_settings(backend, sim)
    job_id = insert_job(backend, "openmanage_sync")
    run_executor(backend, tmp_path, OME_CA_BUNDLE=sim.ca_file)
    row = job(backend, job_id)
    assert row["status"] == "failed"
    d = row["details"]
    assert d["error"].startswith("partial sync: 1 device(s)") and victim["DeviceServiceTag"] in d["error"]
    assert [f["ident"] for f in d["result"]["failed"]] == [victim["DeviceServiceTag"]]
    rows = servers_by_tag(backend)
    expected = len(sim.fleet.servers()) - 2  # every server OME has, but the two without tag/address
    assert d["result"]["sent"] == expected - 1 and len(rows) == expected  # the others + OTHER01
    assert victim["DeviceServiceTag"] not in rows and rows["OTHER01"]["ip_address"] == ip


def test_openmanage_job_cancelled_mid_sync(ome_sim, clean_backend, tmp_path):
    # No timing: the simulator holds page 3 until the executor has seen the cancel, so the handler
    # is known to be mid-sync when it is cancelled and must stop after that page.
    backend = clean_backend
    sim = ome_sim(400)  # 8 pages of 50
    release = sim.faults.hold_page(2 * PAGE)
    seed_key(backend)
    seed_ome_settings(backend, sim)
    job_id = insert_job(backend, "openmanage_sync")
    ex = Executor(
        backend,
        "executor-sync-cancel",
        tmp_path,
        "--once",
        **executor_env({"OME_CA_BUNDLE": sim.ca_file, "OME_BATCH_SIZE": "25"}),
    )
    try:
        wait_until(lambda: 2 * PAGE in sim.faults.held, timeout=120, what="the job to wait on page 3")
        backend.sql("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (job_id,))
        wait_until(
            lambda: "cancelled by the UI" in ex.output, timeout=120, what="the executor to see the cancel"
        )
        release.set()
        assert ex.wait(120) == 0, ex.output
    finally:
        release.set()
        ex.stop()
    row = job(backend, job_id)
    assert row["status"] == "cancelled"
    assert row["details"]["cancelled_step"] == "sync OpenManage devices into servers"
    saved = len(servers_by_tag(backend))
    pages = sim.stats()["requests_by_path"]["/api/DeviceService/Devices"]
    assert 0 < saved < len(sim.fleet.servers()) - 2 and pages == 3  # stopped after the held page
    assert sim.stats()["open_sessions"] == 0  # the OME session was closed
    assert sim.password not in job_blob(backend, job_id)


# ---------------------------------------------------------------------------------------------------
# vcenter_sync
# ---------------------------------------------------------------------------------------------------
def seed_vcenter(
    backend: Any, vc: Any, *, name: str = "lab vCenter", password: str | None = None, **cols: Any
) -> str:
    enc = encrypt_password(password or vc.password, KEY)
    row = backend.sql(
        "INSERT INTO vcenters (name, host, port, username, password_encrypted, verify_ssl, sync_enabled)"
        " VALUES (%s, %s, %s, %s, %s, true, %s) RETURNING id::text",
        (name, vc.host, vc.port, vc.user, enc, cols.get("sync_enabled", True)),
    )
    return row[0]["id"]


def seed_servers_for_hosts(backend: Any, oracle: dict[str, dict]) -> list[str]:
    tags = sorted(h["serial"] for h in oracle.values() if h["serial"])[:3]
    for i, tag in enumerate(tags):
        backend.sql(
            "INSERT INTO servers (ip_address, service_tag) VALUES (%s, %s)", (f"192.0.2.{i + 1}", tag)
        )
    return tags


def comparable_hosts(backend: Any) -> dict[str, dict]:
    tags = {str(r["id"]): r["service_tag"] for r in backend.sql("SELECT id, service_tag FROM servers")}
    out = {}
    for r in backend.sql("SELECT * FROM vcenter_hosts"):
        out[r["source_vcenter_id"]] = {c: r[c] for c in HOST_COLUMNS}
        out[r["source_vcenter_id"]]["server"] = tags.get(str(r["server_id"]))
        out[r["source_vcenter_id"]]["vcenter"] = r["vcenter_id"] is not None
        out[r["source_vcenter_id"]]["synced"] = r["last_sync"] is not None
    return out


def server_links(backend: Any) -> dict[str, str | None]:
    hosts = {
        str(r["id"]): r["source_vcenter_id"]
        for r in backend.sql("SELECT id, source_vcenter_id FROM vcenter_hosts")
    }
    return {
        r["service_tag"]: hosts.get(str(r["vcenter_host_id"])) for r in backend.sql("SELECT * FROM servers")
    }


def test_vcenter_job_writes_what_the_script_writes(vcsim, clean_backend, tmp_path):
    backend = clean_backend
    oracle = vcsim.inventory()

    # 1. the script, through the vcenter-sync edge function
    email, password = f"ops-{os.urandom(4).hex()}@example.com", "Lab-" + os.urandom(8).hex()
    backend.create_user(email, password, role="operator")
    seed_key(backend)
    vc_id = seed_vcenter(backend, vcsim)
    tags = seed_servers_for_hosts(backend, oracle)
    env = {
        **vcsim.env(),
        "SUPABASE_URL": backend.url,
        "SUPABASE_ANON_KEY": backend.anon_key,
        "DSM_EMAIL": email,
        "DSM_PASSWORD": password,
        "VCENTER_ID": vc_id,
    }
    proc = run_script(VCENTER_SCRIPT, tmp_path, env, "--json")
    assert proc.returncode == 0, proc.stderr
    script_report = report_of(proc)
    by_script, links_script = comparable_hosts(backend), server_links(backend)

    # 2. the job, on a reset backend with the same starting rows
    backend.reset()
    seed_key(backend)
    vc_id = seed_vcenter(backend, vcsim)
    seed_vcenter(backend, vcsim, name="disabled one", password="never-used", sync_enabled=False)
    assert seed_servers_for_hosts(backend, oracle) == tags
    job_id = insert_job(backend, "vcenter_sync")  # no scope: every vCenter with sync_enabled
    run_executor(backend, tmp_path, VCENTER_CA_BUNDLE=vcsim.cert_file)
    row = job(backend, job_id)
    assert row["status"] == "completed", row["details"]

    assert comparable_hosts(backend) == by_script and len(by_script) == len(oracle)
    assert server_links(backend) == links_script and all(links_script[t] for t in tags)
    (result,) = row["details"]["result"]["vcenters"]
    assert result["vcenter_id"] == vc_id and result["status"] == "success"
    for key in ("seen", "sent", "new", "updated", "auto_linked", "failed"):
        assert result["report"][key] == script_report[key], key
    vcs = {r["name"]: r for r in backend.sql("SELECT * FROM vcenters")}
    assert vcs["lab vCenter"]["last_sync_status"] == "success" and vcs["lab vCenter"]["last_sync"] is not None
    assert vcs["lab vCenter"]["last_sync_error"] is None
    assert vcs["disabled one"]["last_sync"] is None  # not selected: sync_enabled is false
    assert vcsim.password not in job_blob(backend, job_id)

    # a host that left vCenter is kept; a second run updates and deletes nothing
    backend.sql(
        "INSERT INTO vcenter_hosts (vcenter_id, source_vcenter_id, name) VALUES (%s, 'host-gone', 'gone')",
        (vc_id,),
    )
    again = insert_job(backend, "vcenter_sync", scope={"vcenter_ids": [vc_id]})
    run_executor(backend, tmp_path, VCENTER_CA_BUNDLE=vcsim.cert_file)
    second = job(backend, again)["details"]["result"]["vcenters"][0]["report"]
    assert (second["new"], second["updated"]) == (0, len(oracle))
    assert "host-gone" in comparable_hosts(backend) and len(comparable_hosts(backend)) == len(oracle) + 1


def test_vcenter_job_one_bad_vcenter_fails_the_job_and_the_other_is_saved(vcsim, clean_backend, tmp_path):
    backend = clean_backend
    seed_key(backend)
    good = seed_vcenter(backend, vcsim, name="a good one")
    wrong = "Wrong-Pa55-" + os.urandom(4).hex()
    bad = seed_vcenter(backend, vcsim, name="b wrong password", password=wrong)
    broken = seed_vcenter(backend, vcsim, name="c undecryptable")
    backend.sql(
        "UPDATE vcenters SET password_encrypted = %s WHERE id = %s",
        (encrypt_password("x", os.urandom(32)), broken),
    )
    job_id = insert_job(backend, "vcenter_sync", scope={"vcenter_ids": [good, bad, broken]})
    run_executor(backend, tmp_path, VCENTER_CA_BUNDLE=vcsim.cert_file)
    row = job(backend, job_id)
    assert row["status"] == "failed"
    d = row["details"]
    assert d["error"].startswith("2 of 3 vCenter(s) not fully synced")
    results = {r["name"]: r for r in d["result"]["vcenters"]}
    assert results["a good one"]["status"] == "success"
    assert (
        results["b wrong password"]["status"] == "failed"
        and "login" in results["b wrong password"]["error"].lower()
    )
    assert "decrypt" in results["c undecryptable"]["error"]
    vcs = {r["name"]: r for r in backend.sql("SELECT * FROM vcenters")}
    assert [vcs[n]["last_sync_status"] for n in sorted(vcs)] == ["success", "failed", "failed"]
    assert vcs["b wrong password"]["last_sync_error"]
    rows = backend.sql("SELECT vcenter_id::text AS v FROM vcenter_hosts")
    assert rows and {r["v"] for r in rows} == {good}
    blob = job_blob(backend, job_id)
    assert wrong not in blob and vcsim.password not in blob


def test_vcenter_job_unknown_id_fails_in_preflight(clean_backend, tmp_path):
    backend = clean_backend
    missing = "00000000-0000-4000-8000-000000000001"
    job_id = insert_job(backend, "vcenter_sync", scope={"vcenter_ids": [missing]})
    run_executor(backend, tmp_path)
    d = job(backend, job_id)["details"]
    assert (
        d["phase"] == "preflight"
        and d["invalid_field"] == "target_scope.vcenter_ids"
        and missing in d["error"]
    )
    none_enabled = insert_job(backend, "vcenter_sync")
    run_executor(backend, tmp_path)
    d = job(backend, none_enabled)["details"]
    assert d["phase"] == "preflight" and "sync_enabled" in d["error"]


def test_vcenter_job_adopts_host_rows_the_script_wrote_without_vcenter_id(vcsim, clean_backend, tmp_path):
    """The script run without VCENTER_ID leaves vcenter_id NULL; the job upserts on (vcenter_id,
    source_vcenter_id) and must take such a row over rather than write the host a second time."""
    backend = clean_backend
    oracle = vcsim.inventory()
    seed_key(backend)
    vc_id = seed_vcenter(backend, vcsim)
    moref = sorted(h["moref"] for h in oracle.values())[0]
    backend.sql("INSERT INTO vcenter_hosts (source_vcenter_id, name) VALUES (%s, 'old name')", (moref,))
    job_id = insert_job(backend, "vcenter_sync", scope={"vcenter_ids": vc_id})
    run_executor(backend, tmp_path, VCENTER_CA_BUNDLE=vcsim.cert_file)
    assert job(backend, job_id)["status"] == "completed"
    rows = backend.sql("SELECT * FROM vcenter_hosts WHERE source_vcenter_id = %s", (moref,))
    assert len(rows) == 1 and str(rows[0]["vcenter_id"]) == vc_id and rows[0]["name"] != "old name"
    report = job(backend, job_id)["details"]["result"]["vcenters"][0]["report"]
    assert (report["new"], report["updated"]) == (len(oracle) - 1, 1)
    assert backend.sql("SELECT count(*) AS n FROM vcenter_hosts")[0]["n"] == len(oracle)


pytestmark = pytest.mark.timeout(600)
