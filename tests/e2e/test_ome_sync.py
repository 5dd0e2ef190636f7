"""End to end: the real openmanage-sync-script.py as a subprocess against lab/ome_sim (in-process,
so its counters and faults are at hand) and, for the delivery tests, the lab backend."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from lib.sync.common import RunLock

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "openmanage-sync-script.py"
PAGE = 50


def run(
    tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--env-file",
        str(empty_env_file),
        "--lock-file",
        str(tmp_path / "lock"),
        *args,
    ]
    return subprocess.run(
        cmd, env={**base, **env}, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def ome_env(sim, *, ca: bool = True, password: str | None = None) -> dict[str, str]:
    env = {
        "OME_HOST": sim.host if sim.https else sim.url,
        "OME_USERNAME": sim.username,
        "OME_PASSWORD": password or sim.password,
        "OME_PAGE_SIZE": str(PAGE),
    }
    if ca and sim.ca_file:
        env["OME_CA_BUNDLE"] = sim.ca_file
    return env


def report_of(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "stdout must hold the JSON report only"
    return json.loads(lines[0])


def by_tag(records: list[dict]) -> dict[str, dict]:
    return {r["service_tag"]: r for r in records}


# ---------------------------------------------------------------------------------------------------
# OME side (dry run: nothing is sent, no backend needed)
# ---------------------------------------------------------------------------------------------------
def test_dry_run_reads_every_page_and_normalises_every_trap(ome_sim, tmp_path):
    sim = ome_sim(300)
    out = tmp_path / "devices.json"
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--json", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rep = report_of(proc)
    servers = len(sim.fleet.servers())
    records = json.loads(out.read_text())
    assert rep["seen"] == servers and rep["sent"] == len(records) == servers - 2
    assert {s["ident"] for s in rep["skipped"]} == {
        "NOADDR1",
        f"no-tag-server (OME Id {sim.fleet.traps['no_service_tag']})",
    }
    recs = by_tag(records)
    assert (
        recs["V6FIRST"]["ip_address"] == "127.50.50.11" and recs["V6FIRST"]["idrac_firmware"] == "6.10.30.00"
    )
    assert (
        recs["OSAGENT"]["ip_address"] == "127.50.50.12" and recs["OSAGENT"]["idrac_firmware"] == "7.00.00.00"
    )
    assert recs["V6ONLY1"]["ip_address"] == "::1"
    assert recs["NOIDRAC"]["ip_address"] == "127.60.60.14" and "idrac_firmware" not in recs["NOIDRAC"]
    assert (recs["DISCON1"]["power_state"], recs["DISCON1"]["overall_health"]) == ("Unknown", "Unknown")
    assert (recs["PROXY01"]["power_state"], recs["PROXY01"]["overall_health"]) == ("Off", "Warning")
    assert (recs["BLADE01"]["power_state"], recs["BLADE01"]["overall_health"]) == ("PoweringOn", "Critical")
    assert recs["SLED0A1"]["device_id"] == str(sim.fleet.traps["identifier_differs"])
    assert all(r["service_tag"] and r["ip_address"] for r in records)
    chassis = {d["DeviceServiceTag"] for d in sim.fleet.devices if d["Type"] != 1000}
    assert not chassis & set(recs)
    # every page read once with the filter, sessions closed, within the request budget
    stats = sim.stats()
    assert stats["open_sessions"] == 0 and stats["sessions_created"] == stats["sessions_deleted"] == 1
    assert stats["requests"] == rep["requests"]["ome"] <= math.ceil(servers / PAGE) + 3


def test_include_chassis_adds_type_2000(ome_sim, tmp_path):
    sim = ome_sim(200)
    out = tmp_path / "d.json"
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--include-chassis", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # cron: nothing on stdout without --json
    tags = {r["service_tag"] for r in json.loads(out.read_text())}
    chassis = {d["DeviceServiceTag"] for d in sim.fleet.devices if d["Type"] == 2000}
    assert chassis and chassis <= tags


def test_inventory_fills_bios_cpu_memory(ome_sim, tmp_path):
    sim = ome_sim(40)
    out = tmp_path / "d.json"
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--inventory", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    recs = by_tag(json.loads(out.read_text()))
    inv = sim.fleet.inventory[sim.fleet.traps["blade"]]
    blade = recs["BLADE01"]
    assert blade["bios_version"] == inv["bios"] and blade["cpu_count"] == inv["cpus"]
    assert blade["memory_gb"] == inv["dimms"] * inv["dimm_mb"] // 1024
    assert all("bios_version" in r and r["cpu_count"] in (1, 2) for r in recs.values())
    assert sim.stats()["open_sessions"] == 0


def test_tls_refused_with_the_hint_then_accepted_with_the_ca(ome_sim, tmp_path):
    sim = ome_sim(10)
    proc = run(tmp_path, ome_env(sim, ca=False), "--dry-run")
    assert proc.returncode == 4
    assert "OME_CA_BUNDLE" in proc.stderr and "certificate" in proc.stderr
    assert run(tmp_path, ome_env(sim), "--dry-run").returncode == 0


def test_wrong_password_exit_3_with_hint_and_no_secret(ome_sim, tmp_path):
    sim = ome_sim(10)
    proc = run(tmp_path, ome_env(sim, password="Wrong-Passw0rd"), "--dry-run")
    assert proc.returncode == 3
    assert "OME_PASSWORD" in proc.stderr and "Wrong-Passw0rd" not in proc.stderr + proc.stdout
    assert sim.stats()["sessions_created"] == 0


def test_transient_page_errors_are_retried(ome_sim, tmp_path):
    sim = ome_sim(200)
    sim.faults.fail_page(PAGE, 503, times=2)
    sim.faults.fail_page(2 * PAGE, 500, times=1)
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert report_of(proc)["seen"] == len(sim.fleet.servers())


def test_a_page_that_keeps_failing_makes_the_run_partial(ome_sim, tmp_path):
    sim = ome_sim(200)
    sim.faults.fail_page(PAGE, 500, times=100)
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--json")
    assert proc.returncode == 1, proc.stderr
    rep = report_of(proc)
    assert rep["status"] == "partial" and rep["seen"] == len(sim.fleet.servers()) - PAGE
    assert any(f"$skip={PAGE}" in f["ident"] for f in rep["failed"])
    assert sim.stats()["open_sessions"] == 0


def test_session_expiring_mid_sync_is_renewed_and_both_closed(ome_sim, tmp_path):
    sim = ome_sim(300)
    sim.faults.expire_after_requests = 3
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert report_of(proc)["seen"] == len(sim.fleet.servers())
    stats = sim.stats()
    assert stats["sessions_created"] == 2 and stats["open_sessions"] == 0 and stats["sessions_expired"] == 1


def test_slow_answers_still_complete(ome_sim, tmp_path):
    sim = ome_sim(60)
    sim.faults.delay_seconds = 0.3
    proc = run(tmp_path, ome_env(sim), "--dry-run", "--json")
    assert proc.returncode == 0 and report_of(proc)["seen"] == len(sim.fleet.servers())


def test_overlapping_run_exits_0_with_one_line(ome_sim, tmp_path):
    sim = ome_sim(10)
    with RunLock(tmp_path / "lock"):
        proc = run(tmp_path, ome_env(sim), "--dry-run", "--json")
    assert proc.returncode == 0 and proc.stdout == ""
    assert "already running" in proc.stderr
    assert sim.stats()["requests"] == 0


def test_sigterm_logs_the_session_out(ome_sim, tmp_path):
    sim = ome_sim(100)
    sim.faults.delay_seconds = 0.5
    empty = tmp_path / "e.env"
    empty.write_text("")
    env = {"PATH": os.environ["PATH"], **ome_env(sim)}
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--env-file",
        str(empty),
        "--lock-file",
        str(tmp_path / "l"),
        "--dry-run",
    ]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(100):
        if sim.stats()["requests_by_path"].get("/api/DeviceService/Devices"):
            break  # mid-sync: paging under way
        subprocess.run(["sleep", "0.05"])
    proc.terminate()
    assert proc.wait(30) == 130, proc.stderr.read()
    assert sim.stats()["sessions_created"] == 1 and sim.stats()["open_sessions"] == 0


# ---------------------------------------------------------------------------------------------------
# Delivery to the lab backend
# ---------------------------------------------------------------------------------------------------
def dsm_env(backend, token: str) -> dict[str, str]:
    return {"SUPABASE_URL": backend.url, "SUPABASE_ANON_KEY": backend.anon_key, "DSM_API_TOKEN": token}


def servers(backend) -> dict[str, dict]:
    return {r["service_tag"]: r for r in backend.sql("select * from servers")}


def test_full_sync_then_second_run_updates(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(300)
    env = {**ome_env(sim), **dsm_env(backend, backend.create_api_token())}
    proc = run(tmp_path, env, "--json", "--batch-size", "100")
    assert proc.returncode == 0, proc.stderr
    rep = report_of(proc)
    expected = len(sim.fleet.servers()) - 2
    assert (rep["sent"], rep["new"], rep["updated"], rep["failed"]) == (expected, expected, 0, [])
    rows = servers(backend)
    assert len(rows) == expected
    assert rows["V6FIRST"]["ip_address"] == "127.50.50.11"
    assert rows["BLADE01"]["overall_health"] == "Critical" and rows["BLADE01"]["power_state"] == "PoweringOn"
    assert rows["SLED0A1"]["model"] == "PowerEdge R640"
    assert "NOADDR1" not in rows
    again = report_of(run(tmp_path, env, "--json", "--batch-size", "100"))
    assert (again["new"], again["updated"]) == (0, expected)
    assert len(servers(backend)) == expected
    assert sim.stats()["open_sessions"] == 0


def test_conflicting_row_is_isolated_and_everything_else_saved(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(200)
    victim = next(d for d in sim.fleet.servers()[20:] if d["DeviceServiceTag"])
    ip = next(
        m["NetworkAddress"] for m in victim["DeviceManagement"] if m["NetworkAddress"] not in ("[::]", "")
    )
    backend.sql("insert into servers (ip_address, service_tag, hostname) values (%s, 'OTHER01', 'x')", (ip,))
    env = {**ome_env(sim), **dsm_env(backend, backend.create_api_token())}
    proc = run(tmp_path, env, "--json", "--batch-size", "64")
    assert proc.returncode == 1, proc.stderr
    rep = report_of(proc)
    assert [f["ident"] for f in rep["failed"]] == [victim["DeviceServiceTag"]]
    assert rep["failed"][0]["reason"].startswith("Bulk upsert failed")
    rows = servers(backend)
    expected = len(sim.fleet.servers()) - 2
    assert rep["sent"] == expected - 1 and len(rows) == expected  # every other device + OTHER01
    assert victim["DeviceServiceTag"] not in rows and rows["OTHER01"]["ip_address"] == ip


def test_backend_token_rejected_exit_3(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(10)
    proc = run(tmp_path, {**ome_env(sim), **dsm_env(backend, "not-a-valid-token")})
    assert proc.returncode == 3
    assert "DSM_API_TOKEN" in proc.stderr and "not-a-valid-token" not in proc.stderr
    assert sim.stats()["open_sessions"] == 0


def test_check_prints_a_checklist(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(30)
    proc = run(tmp_path, {**ome_env(sim), **dsm_env(backend, backend.create_api_token())}, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["OK"] * 10
    assert any(line.startswith("OK   OME TLS: ") and "OME_CA_BUNDLE" in line for line in lines)
    assert "4.1.0" in proc.stdout and sim.stats()["open_sessions"] == 0
    assert servers(backend) == {}
