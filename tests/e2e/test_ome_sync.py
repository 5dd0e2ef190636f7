"""End to end: the real openmanage-sync-script.py as a subprocess against lab/ome_sim (in-process,
so its counters and faults are at hand) and, for the delivery tests, the lab backend."""

from __future__ import annotations

import functools
import json
import math

from lib.sync.common import RunLock
from tests.e2e.sync_helpers import OME_SCRIPT, report_of, run_script, start_script, wait_for

PAGE = 50
run = functools.partial(run_script, OME_SCRIPT)


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


def test_lock_file_never_follows_a_link_nor_truncates_another_file(tmp_path):
    """The default lock lives in the shared temp dir: a planted symlink or hard link to a file of
    ours must not be followed, truncated or written."""
    import os

    import pytest

    from lib.errors import ConfigError

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n" * 3)
    (tmp_path / "sym.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"), RunLock(tmp_path / "sym.lock"):
        pass
    os.link(victim, tmp_path / "hard.lock")
    with pytest.raises(ConfigError, match="single link"), RunLock(tmp_path / "hard.lock"):
        pass
    assert victim.read_text() == "keep me\n" * 3
    # our own lock file: the pid is written in place, covering whatever an older run left
    own = tmp_path / "own.lock"
    own.write_text("1234567\n")
    with RunLock(own):
        assert own.read_text().split() == [str(os.getpid())]


def test_sigterm_logs_the_session_out(ome_sim, tmp_path):
    # slow pages (8 of them, 1 s each): a wide window in which the sync is surely paging
    sim = ome_sim(400)
    sim.faults.delay_seconds = 1.0
    proc = start_script(OME_SCRIPT, tmp_path, ome_env(sim), "--dry-run")
    try:
        # only once paging has started is cli.run's SIGTERM handler surely installed (before it, the
        # signal kills the interpreter with -15 and proves nothing)
        wait_for(
            lambda: (
                bool(sim.stats()["requests_by_path"].get("/api/DeviceService/Devices"))
                or proc.poll() is not None
            ),
            "the sync to start paging",
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.terminate()
        assert proc.wait(120) == 130, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stats = sim.stats()
    assert stats["sessions_created"] == 1 and stats["open_sessions"] == 0
    pages = math.ceil(len(sim.fleet.servers()) / PAGE)
    assert stats["requests_by_path"]["/api/DeviceService/Devices"] < pages  # stopped mid-way


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


def test_backend_token_rejected_exit_3_before_ome_is_touched(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(10)
    proc = run(tmp_path, {**ome_env(sim), **dsm_env(backend, "not-a-valid-token")}, "--json")
    assert proc.returncode == 3
    assert "DSM_API_TOKEN" in proc.stderr and "not-a-valid-token" not in proc.stderr + proc.stdout
    assert sim.stats()["sessions_created"] == 0  # the DSM credential was proven first
    rep = report_of(proc)  # the report still comes out, saying the run failed and why
    assert rep["status"] == "failed" and "401" in rep["error"] and rep["sent"] == 0


def test_fatal_error_mid_sync_still_reports_what_was_saved(ome_sim, clean_backend, tmp_path):
    backend = clean_backend
    sim = ome_sim(300)
    sim.faults.fail_page(3 * PAGE, 401, times=1000)  # the fourth page: OME rejects even a new session
    env = {**ome_env(sim), **dsm_env(backend, backend.create_api_token())}
    proc = run(tmp_path, env, "--json", "--batch-size", "40")
    assert proc.returncode == 3, proc.stderr
    rep = report_of(proc)
    assert rep["status"] == "failed" and "OME rejected a fresh session" in rep["error"]
    saved = len(servers(backend))
    assert rep["sent"] == rep["new"] == saved > 0  # the batches before the failure were saved, and say so
    # both sessions were deleted: the first (the injected 401 leaves it valid in the simulator) before
    # logging in again, the one held at the end on the way out
    assert sim.stats()["sessions_deleted"] == 2 and sim.stats()["open_sessions"] == 0
    # without --json the same report goes to the log, before the error line
    proc = run(tmp_path, env, "--batch-size", "40")
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.index("OpenManage sync FAILED after") < proc.stderr.index("error: OME rejected")


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


def test_every_request_carries_one_key_set_so_no_stored_value_is_blanked(ome_sim):
    """A bulk upsert through PostgREST takes the union of a request's keys and NULLs the ones a row
    lacks (the real function maps fields explicitly; the lab function's COALESCE hides this). NOIDRAC
    has no iDRAC firmware to send: in a request with devices that do, its stored value would be
    blanked. The sync keeps devices with different key sets in different requests."""
    from lib.config import OmeSettings
    from lib.http import TLSConfig
    from lib.sync.common import SyncReport
    from lib.sync.delivery import BatchOutcome
    from lib.sync.ome import OmeSyncOptions, sync_ome

    sim = ome_sim(120, https=False)
    store = {"NOIDRAC": {"service_tag": "NOIDRAC", "idrac_firmware": "5.10.00.00", "model": "R650"}}
    requests: list[list[dict]] = []

    def postgrest_upsert(batch):
        rows = [d.payload() for d in batch]
        requests.append(rows)
        columns = set().union(*rows)
        for row in rows:
            stored = store.setdefault(row["service_tag"], {})
            stored.update({c: row.get(c) for c in columns})
        return BatchOutcome(ok=True, new=len(rows))

    settings = OmeSettings(
        host=sim.url,
        port=443,
        username=sim.username,
        password=sim.password,
        tls=TLSConfig(env_prefix="OME"),
        page_size=PAGE,
        timeout=30,
        inventory_threads=2,
        batch_size=200,
    )
    report = SyncReport("OpenManage")
    sync_ome(settings, postgrest_upsert, OmeSyncOptions(batch_size=200), report)
    assert report.sent == len(sim.fleet.servers()) - 2 and not report.failed
    assert all(len({frozenset(r) for r in rows}) == 1 for rows in requests)
    assert store["NOIDRAC"]["idrac_firmware"] == "5.10.00.00"  # not blanked
    assert store["NOIDRAC"]["model"] is not None
    assert sum(len(rows) for rows in requests) == report.sent
