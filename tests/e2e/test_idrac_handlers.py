"""power_action, health_check and test_credentials end to end: a real job row in the lab backend
(real PostgreSQL behind PostgREST), claimed and run by the executor's runner (lib.executor.runner),
against simulated iDRACs over HTTPS with a private CA."""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid

import pytest
import requests

from lab.idrac_sim import SESSIONS
from lib.dsm.credentials import CredentialResolver, encrypt_password
from lib.dsm.rest import RestClient
from lib.executor.context import IdracSlots, Services
from lib.executor.runner import JobRun
from lib.executor.store import HandlerStoreImpl, JobStore

PASSWORD = "Sim-Pa55-e2e!"
KEY = base64.b64encode(bytes(range(32))).decode()
FAST = {"poll_interval_seconds": 0.1}


@pytest.fixture
def lab(clean_backend, idrac_sim, monkeypatch):
    """(backend, start_fleet): a clean backend with an encryption key and a credential set."""
    b = clean_backend
    b.sql("INSERT INTO activity_settings (encryption_key, idrac_max_concurrent) VALUES (%s, 8)", (KEY,))
    enc = encrypt_password(PASSWORD, base64.b64decode(KEY))
    cs = b.sql(
        "INSERT INTO credential_sets (name, username, password_encrypted) VALUES ('lab', 'root', %s) RETURNING id",
        (enc,),
    )[0]["id"]
    monkeypatch.setenv("IDRAC_BUSY_RETRY_SECONDS", "20")
    state = {"cs": str(cs)}

    def start(n: int = 1, *, trusted: bool = True, **opts):
        fleet = idrac_sim(n, tls=True, password=PASSWORD, power_delay=opts.pop("power_delay", 0.3), **opts)
        if trusted:  # read when run_job builds its Services (settings from the process environment)
            monkeypatch.setenv("IDRAC_CA_BUNDLE", fleet.ca_file)
        ids = []
        for bmc in fleet:
            row = b.sql(
                "INSERT INTO servers (ip_address, service_tag, hostname, credential_set_id) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (bmc.address, f"{bmc.service_tag}-{uuid.uuid4().hex[:6]}", f"h{bmc.index}", state["cs"]),
            )
            ids.append(str(row[0]["id"]))
        return fleet, ids

    yield b, start


def run_job(b, job_type: str, *, server_ids=None, details=None, scope=None) -> dict:
    """Insert a pending job as the UI does, let the executor claim and run it, return its rows."""
    scope = scope if scope is not None else {"type": "specific", "server_ids": server_ids or []}
    job_id = b.sql(
        "INSERT INTO jobs (job_type, status, target_scope, details) VALUES (%s, 'pending', %s, %s) RETURNING id",
        (job_type, json.dumps(scope), json.dumps(details) if details is not None else None),
    )[0]["id"]
    rest = RestClient(b.url, b.service_role_key)
    store = JobStore(rest, "executor-e2e", lease_seconds=60)
    services = Services(
        store=store,
        handler_store=HandlerStoreImpl(rest, store),
        resolver=CredentialResolver(rest),
        idrac_slots=IdracSlots(8),
        executor_id="executor-e2e",
    )
    rows = store.claim([job_type], 1)
    assert rows and str(rows[0]["id"]) == str(job_id)
    JobRun(rows[0], services).run()
    job = b.sql("SELECT * FROM jobs WHERE id = %s", (job_id,))[0]
    tasks = b.sql("SELECT * FROM job_tasks WHERE job_id = %s", (job_id,))
    cmds = b.sql("SELECT * FROM idrac_commands WHERE job_id = %s", (job_id,))
    steps = b.sql("SELECT * FROM workflow_executions WHERE job_id = %s ORDER BY step_number", (job_id,))
    return {"job": job, "tasks": tasks, "cmds": cmds, "steps": steps, "id": job_id}


def servers(b, ids) -> dict[str, dict]:
    rows = b.sql("SELECT * FROM servers WHERE id = ANY(%s::uuid[])", (ids,))
    return {str(r["id"]): r for r in rows}


def assert_clean(fleet, out):
    """No session left open on any BMC; no password in job details, task logs, idrac_commands or
    workflow_executions (step_name, step_details, step_error)."""
    assert fleet.sessions_open() == {b.address: 0 for b in fleet}
    assert "steps" in out  # the step rows are part of what is scanned
    blob = json.dumps(out, default=str)
    assert PASSWORD not in blob
    for bmc in fleet:
        assert bmc.password not in blob


@pytest.mark.parametrize(
    "action,start,final,reset_sent",
    [
        ("On", "Off", "On", True),
        ("On", "On", "On", False),
        ("GracefulShutdown", "On", "Off", True),
        ("GracefulShutdown", "Off", "Off", False),
        ("ForceOff", "On", "Off", True),
        ("ForceOff", "Off", "Off", False),
        ("ForceRestart", "On", "On", True),
        ("GracefulRestart", "On", "On", True),
        ("PowerCycle", "On", "On", True),
        ("PushPowerButton", "Off", "On", True),
        ("Nmi", "On", "On", True),
    ],
)
def test_power_action(lab, action, start, final, reset_sent):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    fleet[0].set_power(start)
    out = run_job(b, "power_action", server_ids=ids, details={"action": action, **FAST})
    assert out["job"]["status"] == "completed", out["job"]["details"]
    assert servers(b, ids)[ids[0]]["power_state"] == final
    assert fleet[0].power_state() == final
    assert fleet[0].stats.resets == ([action] if reset_sent else [])
    assert [t["status"] for t in out["tasks"]] == ["completed"]
    assert out["cmds"] and all(c["endpoint"].startswith("/redfish/v1") for c in out["cmds"])
    assert any(c["command_type"] == "DELETE" and c["endpoint"].startswith(SESSIONS) for c in out["cmds"])
    (summary,) = out["job"]["details"]["result"]["servers"]
    if action in ("ForceRestart", "GracefulRestart", "PowerCycle"):
        # accepted is not enough: the restart was seen (LastResetTime/BootProgress or power Off)
        assert summary["restart_verified"] is True and summary["restart_evidence"], summary
        if action != "PowerCycle":  # a Dell warm reset never shows Off: only the markers prove it
            assert fleet[0].stats.power_changes == []
    assert_clean(fleet, out)


def test_graceful_restart_ignored_by_a_hung_os_fails_with_forcerestart_hint(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    fleet[0].os_responsive = False  # accepts the request (204), the OS never restarts
    out = run_job(
        b, "power_action", server_ids=ids, details={"action": "GracefulRestart", "timeout_seconds": 2, **FAST}
    )
    assert out["job"]["status"] == "failed"
    err = out["job"]["details"]["error"]
    assert "no sign of a restart" in err and "LastResetTime still" in err and "ForceRestart" in err
    assert fleet[0].stats.resets == ["GracefulRestart"]  # never escalated to ForceRestart
    assert_clean(fleet, out)


def test_restart_on_a_bmc_without_markers_completes_with_a_warning(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1, restart_markers=False)  # older firmware: no LastResetTime/BootProgress
    out = run_job(b, "power_action", server_ids=ids, details={"action": "ForceRestart", **FAST})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (summary,) = out["job"]["details"]["result"]["servers"]
    assert summary["restart_verified"] is None and summary["restart_evidence"] is None
    (task,) = out["tasks"]
    assert "could not be verified" in json.dumps(task, default=str)
    assert fleet[0].stats.resets == ["ForceRestart"]
    assert_clean(fleet, out)


def test_graceful_shutdown_timeout_fails_with_forceoff_hint_and_never_escalates(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(2, power_delay=0.05)
    # A hung OS ignores the ACPI request: the simulator never schedules the Off, so h2's timeout is
    # certain however slow the machine; the 10 s leave h1 ample time to reach Off on a loaded host.
    fleet[1].os_responsive = False
    out = run_job(
        b,
        "power_action",
        server_ids=ids,
        details={"action": "GracefulShutdown", "timeout_seconds": 10, **FAST},
    )
    assert out["job"]["status"] == "failed"
    err = out["job"]["details"]["error"]
    assert "1 of 2" in err and "h2" in err and "did not power off" in err
    result = out["job"]["details"]["result"]
    assert [f["server_id"] for f in result["failed"]] == [ids[1]] and "ForceOff" in result["failed"][0][
        "error"
    ]
    assert [s["server_id"] for s in result["servers"]] == [ids[0]]
    assert "ForceOff" in json.dumps(out["job"]["details"])
    assert fleet[1].stats.resets == ["GracefulShutdown"] and fleet[1].power_state() == "On"
    assert fleet[0].power_state() == "Off"
    status = {str(t["server_id"]): t["status"] for t in out["tasks"]}
    assert status == {ids[0]: "completed", ids[1]: "failed"}
    assert_clean(fleet, out)


def test_unknown_action_fails_in_preflight_naming_the_field(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    out = run_job(b, "power_action", server_ids=ids, details={"action": "Off"})
    assert out["job"]["status"] == "failed"
    assert "details.action" in out["job"]["details"]["error"]
    assert fleet[0].stats.resets == []


def test_fleet_of_30_in_one_job_one_session_per_bmc(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(30, power_delay=0.2)
    out = run_job(b, "power_action", server_ids=ids, details={"action": "ForceRestart", **FAST})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    assert len(out["tasks"]) == 30 and {t["status"] for t in out["tasks"]} == {"completed"}
    assert fleet.max_sessions_ever() == 1
    assert all(bmc.stats.resets == ["ForceRestart"] for bmc in fleet)
    assert_clean(fleet, out)


def test_session_limit_hit_then_recovered(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1, session_limit=1)
    bmc = fleet[0]
    s = requests.Session()
    s.trust_env = False
    s.verify = fleet.ca_file
    other = s.post(
        f"https://{bmc.address}{SESSIONS}", json={"UserName": "root", "Password": PASSWORD}, timeout=5
    )
    assert other.status_code == 201  # another tool holds the only session

    def release():
        s.delete(
            f"https://{bmc.address}{other.headers['Location']}",
            headers={"X-Auth-Token": other.headers["X-Auth-Token"]},
        )

    threading.Timer(2.0, release).start()
    out = run_job(b, "health_check", server_ids=ids)
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    assert bmc.stats.session_limit_rejections >= 1
    assert any(c["status_code"] == 503 and "RAC0218" in (c["error_message"] or "") for c in out["cmds"])
    assert_clean(fleet, out)


def test_basic_auth_switched_off_and_no_session_service(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1, basic_auth=False)
    out = run_job(b, "health_check", server_ids=ids)
    assert out["job"]["status"] == "completed"
    assert fleet[0].stats.basic_auth_requests == 0 and fleet[0].stats.sessions_created == 1
    old, old_ids = start_fleet(1, sessions_supported=False)  # an old BMC: Basic per request
    out = run_job(b, "health_check", server_ids=old_ids)
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    assert old[0].stats.sessions_created == 0 and old[0].stats.basic_auth_requests > 0
    assert_clean(old, out)


def test_bmc_reboot_mid_job(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1, power_delay=2.0)
    fleet[0].set_power("Off")
    fleet[0].reboot_after(6, 1.5)  # during the wait for On: sessions dropped, port closed for 1.5 s
    out = run_job(b, "power_action", server_ids=ids, details={"action": "On", "timeout_seconds": 30, **FAST})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    assert fleet[0].stats.reboots == 1 and fleet[0].power_state() == "On"
    assert fleet[0].stats.sessions_created == 2  # logged in again after the reboot
    assert servers(b, ids)[ids[0]]["power_state"] == "On"
    assert_clean(fleet, out)


def test_health_with_failed_components(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(2)
    fleet[1].set_health("Fan.Embedded.2A", "Critical")
    fleet[1].set_health("RAID.Integrated.1-1", "Warning")
    fleet[1].set_power("Off")
    out = run_job(b, "health_check", scope={"server_ids": ids})
    assert out["job"]["status"] == "completed"
    rows = servers(b, ids)
    assert rows[ids[0]]["overall_health"] == "OK" and rows[ids[1]]["overall_health"] == "Critical"
    assert rows[ids[1]]["power_state"] == "Off" and rows[ids[1]]["last_health_check"] is not None
    result = {s["server_id"]: s for s in out["job"]["details"]["result"]["servers"]}
    assert result[ids[0]]["problems"] == []
    bad = {(p["component"], p["health"]) for p in result[ids[1]]["problems"]}
    assert bad == {("fan", "Critical"), ("storage", "Warning")}
    assert_clean(fleet, out)


def test_credentials_valid_wrong_unreachable_untrusted(lab, idrac_sim):
    b, start_fleet = lab
    fleet, ids = start_fleet(2)
    fleet[1].password = "changed-on-the-bmc"  # DSM's stored password is now wrong
    stranger = idrac_sim(1, tls=True, password=PASSWORD)  # another CA: untrusted certificate
    # A BMC that is gone: a port kept bound (nobody else can take it) but never listening: refused.
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    extra = []
    for address in (stranger[0].address, f"127.0.0.1:{gone.getsockname()[1]}"):
        row = b.sql(
            "INSERT INTO servers (ip_address, service_tag, credential_set_id) VALUES (%s, %s, "
            "(SELECT id FROM credential_sets LIMIT 1)) RETURNING id",
            (address, uuid.uuid4().hex[:10]),
        )
        extra.append(str(row[0]["id"]))
    try:
        out = run_job(b, "test_credentials", server_ids=ids + extra)
    finally:
        gone.close()
    assert out["job"]["status"] == "failed"
    rows = servers(b, ids + extra)
    ok, wrong, untrusted, unreachable = (rows[i] for i in ids + extra)
    assert (ok["credential_test_status"], ok["connection_status"], ok["connection_error"]) == (
        "valid",
        "online",
        None,
    )
    assert wrong["credential_test_status"] == "invalid" and wrong["connection_status"] == "online"
    assert wrong["connection_error"].startswith("Wrong user name or password")
    assert untrusted["connection_status"] == "offline" and untrusted["connection_error"].startswith("TLS")
    assert untrusted["credential_test_status"] is None
    assert unreachable["connection_status"] == "offline" and unreachable["connection_error"].startswith(
        "Unreachable"
    )
    assert all(r["credential_last_tested"] is not None for r in rows.values())
    err = out["job"]["details"]["error"]
    assert "3 of 4" in err and "Wrong user name or password" in err
    assert_clean(fleet, out)
    assert stranger.sessions_open() == {stranger[0].address: 0}


def test_credentials_for_an_address_and_credential_set(lab, idrac_sim):
    b, start_fleet = lab
    fleet, _ids = start_fleet(1)
    cs = b.sql("SELECT id FROM credential_sets LIMIT 1")[0]["id"]
    out = run_job(
        b,
        "test_credentials",
        scope={},
        details={"ip_address": fleet[0].address, "credential_set_id": str(cs)},
    )
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    assert out["job"]["details"]["result"]["servers"][0]["verdict"] == "valid"
    assert_clean(fleet, out)


def test_restart_evidence_reads_markers_and_ignores_dells_zero_time():
    from handlers.power import can_verify_restart, restart_evidence

    zero = {"PowerState": "On", "LastResetTime": "0000-00-00T00:00:00+00:00"}
    assert not can_verify_restart(zero) and not can_verify_restart({"PowerState": "On"})
    before = {
        "PowerState": "On",
        "LastResetTime": "2026-01-01T10:00:00-06:00",
        "BootProgress": {"LastState": "OSRunning", "LastStateTime": "2026-01-01T10:03:00-06:00"},
    }
    assert can_verify_restart(before) and restart_evidence(before, before) is None
    later = {**before, "LastResetTime": "2026-01-02T08:00:00-06:00"}
    assert "LastResetTime changed" in restart_evidence(before, later)
    posting = {**before, "BootProgress": {"LastState": "OEM", "OemLastState": "Lifecycle Controller"}}
    assert "BootProgress.LastState" in restart_evidence(before, posting)
    assert restart_evidence(before, {**before, "PowerState": "Off"}) == "power state went Off"
    assert restart_evidence(zero, {**zero, "LastResetTime": "0000-00-00T00:00:00+00:00"}) is None
