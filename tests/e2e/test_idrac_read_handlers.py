"""firmware_inventory_scan, bios_config_read and fetch_event_logs end to end: a real job row in the
lab backend, claimed and run by the executor's runner, against simulated iDRACs over HTTPS.
The helpers (lab fixture, run_job, servers, assert_clean) are those of test_idrac_handlers."""

# ruff: noqa: F401, F811

from __future__ import annotations

import datetime as dt
import json

import pytest

from lab.idrac_sim import SESSIONS

# `lab` is a pytest fixture: imported here so pytest finds it, then named as a test parameter.
from tests.e2e.test_idrac_handlers import assert_clean, lab, run_job, servers

READ_TYPES = ("firmware_inventory_scan", "bios_config_read", "fetch_event_logs")


def only_gets(out, fleet, *, since: dict | None = None, logged_in: set[int] | None = None) -> None:
    """Nothing was written to a BMC, counted on the simulator (not the best-effort audit rows):
    each BMC saw GETs plus exactly one session login and the DELETE of that same session.
    `logged_in`: when given, the BMCs (by index) that accept the login; the others (wrong
    password) must have seen nothing but failed login POSTs.
    `since`: {bmc index: number of calls before this job} when a fleet runs several jobs."""
    assert out["cmds"]
    for bmc in fleet:
        first = (since or {}).get(bmc.index, 0)
        calls = bmc.stats.calls[first:]
        writes = [c for c in calls if c[0] != "GET"]
        assert calls, bmc.address
        if logged_in is not None and bmc.index not in logged_in:
            assert writes and all(w == ("POST", SESSIONS) for w in writes), writes
            continue
        new = bmc.stats.session_ids[-1]
        assert writes == [("POST", SESSIONS), ("DELETE", f"{SESSIONS}/{new}")], writes


def mark(fleet) -> dict:
    return {bmc.index: len(bmc.stats.calls) for bmc in fleet}


def result_servers(out) -> dict[str, dict]:
    return {s["server_id"]: s for s in out["job"]["details"]["result"]["servers"]}


def test_firmware_inventory_scan_lists_installed_components_and_writes_versions(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(2)
    fleet[1].inventory.firmware[1]["Version"] = "2.1.0"  # the second server's BIOS differs
    out = run_job(b, "firmware_inventory_scan", server_ids=ids)
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    res = result_servers(out)
    comps = {c["name"]: c for c in res[ids[0]]["components"]}
    assert comps["Integrated Dell Remote Access Controller"]["version"] == "7.00.00.171"
    assert comps["BIOS"] == {
        "name": "BIOS",
        "version": "1.13.2",
        "updateable": True,
        "id": "Installed-159-1.13.2",
    }
    assert comps["Lifecycle Controller"]["updateable"] is False
    assert comps["PERC H755 Front"]["version"] == "52.26.0-5179"
    assert res[ids[0]]["component_count"] == 5  # the Previous- (rollback) BIOS image is not installed
    assert all(c["id"].startswith("Installed-") for c in res[ids[0]]["components"])
    rows = servers(b, ids)
    assert rows[ids[0]]["idrac_firmware"] == "7.00.00.171" and rows[ids[0]]["bios_version"] == "1.13.2"
    assert {c["name"]: c["version"] for c in res[ids[1]]["components"]}["BIOS"] == "2.1.0"
    assert [t["status"] for t in out["tasks"]] == ["completed", "completed"]
    only_gets(out, fleet)
    assert_clean(fleet, out)


@pytest.mark.parametrize("job_type", READ_TYPES)
def test_wrong_password_fails_only_that_servers_task(lab, job_type):
    b, start_fleet = lab
    fleet, ids = start_fleet(2)
    fleet[1].password = "changed-on-the-bmc"  # DSM's stored password is now wrong
    out = run_job(b, job_type, server_ids=ids)
    assert out["job"]["status"] == "failed"
    details = out["job"]["details"]
    assert "1 of 2" in details["error"] and "h2" in details["error"]
    assert [f["server_id"] for f in details["result"]["failed"]] == [ids[1]]
    assert list(result_servers(out)) == [ids[0]]
    status = {str(t["server_id"]): t["status"] for t in out["tasks"]}
    assert status == {ids[0]: "completed", ids[1]: "failed"}
    only_gets(out, fleet, logged_in={fleet[0].index})
    errors = [x["step_error"] for x in out["steps"] if x["step_status"] == "failed"]
    assert any("login as root failed" in e for e in errors), out["steps"]
    # The per-server step is the one that failed, in the details and in its own step row.
    per_server = [x for x in out["steps"] if x["step_name"].endswith("on 2 server(s)")]
    assert details["failed_step"] == per_server[0]["step_name"]
    assert per_server[0]["step_status"] == "failed"
    assert_clean(fleet, out)  # DSM's password (the one sent) is in no row, step rows included


def test_bios_config_read_never_stores_password_attributes(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    inv = fleet[0].inventory
    inv.bios_attributes["SysPassword"] = "bios-secret-pw-1"  # some platforms answer a value
    out = run_job(b, "bios_config_read", server_ids=ids)
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    attrs = res["attributes"]
    assert attrs["BootMode"] == "Uefi" and attrs["SysProfile"] == "PerfOptimized"
    assert attrs["SystemServiceTag"] == fleet[0].service_tag
    # by name (SysPassword, SetupPassword, even the harmless PasswordStatus) and by registry type
    assert res["withheld"] == ["IscsiDev1Con1ChapSecret", "PasswordStatus", "SetupPassword", "SysPassword"]
    assert not any("password" in n.lower() for n in attrs) and "IscsiDev1Con1ChapSecret" not in attrs
    assert res["registry_read"] is True and res["attribute_count"] == len(attrs) == 6
    blob = json.dumps(out, default=str)
    assert "bios-secret-pw-1" not in blob and "sim-chap-secret-1" not in blob
    assert servers(b, ids)[ids[0]]["bios_version"] == "1.13.2"
    only_gets(out, fleet)
    assert_clean(fleet, out)


def test_bios_config_read_filtered_by_names(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    fleet[0].inventory.bios_attributes["SetupPassword"] = "setup-secret-2"
    details = {"attributes": ["BootMode", "LogicalProc", "SetupPassword", "NoSuchAttribute"]}
    out = run_job(b, "bios_config_read", server_ids=ids, details=details)
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    assert res["attributes"] == {"BootMode": "Uefi", "LogicalProc": "Enabled"}
    assert res["withheld"] == ["SetupPassword"] and res["missing"] == ["NoSuchAttribute"]
    assert "setup-secret-2" not in json.dumps(out, default=str)
    assert_clean(fleet, out)


def test_bios_config_read_rejects_a_bad_attribute_list(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    out = run_job(b, "bios_config_read", server_ids=ids, details={"attributes": "BootMode"})
    assert out["job"]["status"] == "failed" and "details.attributes" in out["job"]["details"]["error"]
    assert fleet[0].stats.requests == 0


def _created(e: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(e["created"])


def test_fetch_event_logs_follows_pages_up_to_the_limit_newest_first(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    inv = fleet[0].inventory
    inv.set_log("Sel", 120)  # 3 pages of 50
    out = run_job(b, "fetch_event_logs", server_ids=ids, details={"log": "sel", "limit": 110})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    entries = res["entries"]
    assert res["counts"] == {"sel": 110} and len(entries) == 110
    assert [e["id"] for e in entries] == [str(i) for i in range(120, 10, -1)]  # the newest 110
    assert [_created(e) for e in entries] == sorted((_created(e) for e in entries), reverse=True)
    first = entries[0]
    assert first["log"] == "sel" and first["entry_type"] == "SEL" and first["message"] == "Sel entry 120"
    assert first["severity"] == "Warning" and first["message_id"] == "IDRAC.2.9.PSU0003"
    assert inv.pages_served == 3
    pages = [c for c in out["cmds"] if c["endpoint"].endswith("/Sel/Entries")]
    assert len(pages) == 3
    only_gets(out, fleet)
    assert_clean(fleet, out)


def test_fetch_event_logs_defaults_and_both_logs(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    inv = fleet[0].inventory
    inv.set_log("Sel", 130)
    inv.set_log("Lclog", 7)
    out = run_job(b, "fetch_event_logs", server_ids=ids)  # details NULL: sel, 100
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    assert res["counts"] == {"sel": 100} and res["entries"][0]["id"] == "130"
    assert out["job"]["details"]["result"]["logs"] == ["sel"]
    only_gets(out, fleet)
    before = mark(fleet)
    out = run_job(b, "fetch_event_logs", server_ids=ids, details={"log": "both", "limit": 5})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    assert res["counts"] == {"sel": 5, "lifecycle": 5}
    lc = [e for e in res["entries"] if e["log"] == "lifecycle"]
    assert [e["id"] for e in lc] == ["7", "6", "5", "4", "3"] and lc[0]["entry_type"] == "Event"
    assert [_created(e) for e in res["entries"]] == sorted(
        (_created(e) for e in res["entries"]), reverse=True
    )
    only_gets(out, fleet, since=before)
    assert_clean(fleet, out)


@pytest.mark.parametrize(
    "details,field", [({"log": "audit"}, "details.log"), ({"limit": 0}, "details.limit")]
)
def test_fetch_event_logs_rejects_bad_input(lab, details, field):
    b, start_fleet = lab
    _fleet, ids = start_fleet(1)
    out = run_job(b, "fetch_event_logs", server_ids=ids, details=details)
    assert out["job"]["status"] == "failed" and field in out["job"]["details"]["error"]


def test_result_size_is_bounded_with_a_note(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(3)
    for bmc in fleet:
        bmc.inventory.log_page_size = 500
        bmc.inventory.set_log("Sel", 2000, message="x" * 450)  # about 1 MB of entries per server
    out = run_job(b, "fetch_event_logs", server_ids=ids, details={"limit": 2000})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    result = out["job"]["details"]["result"]
    assert len(json.dumps(result)) <= 256_000
    assert len(json.dumps(out["job"]["details"], default=str)) < 400_000
    for res in result["servers"]:
        assert res["counts"] == {"sel": 2000}
        kept = res["truncated"]["kept"]
        assert 0 < kept < 2000 and res["truncated"]["total"] == 2000 and len(res["entries"]) == kept
        assert "limited to" in res["truncated"]["note"]
        assert res["entries"][0]["id"] == "2000"  # what is kept is the newest
        assert len(res["entries"][0]["message"]) == 450
    assert_clean(fleet, out)


def test_bios_config_read_withholds_secrets_by_name_when_the_registry_is_unreadable(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    inv = fleet[0].inventory
    inv.registry_readable = False  # the registry answers 404: only the name rule is left
    inv.bios_attributes.update({"IscsiInitiatorChapSecret2": "sim-chap-secret-2", "WifiPsk": "sim-psk-3"})
    out = run_job(b, "bios_config_read", server_ids=ids)
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    assert res["registry_read"] is False
    assert {"IscsiDev1Con1ChapSecret", "IscsiInitiatorChapSecret2", "WifiPsk"} <= set(res["withheld"])
    assert res["attributes"]["BootMode"] == "Uefi"
    blob = json.dumps(out, default=str)
    for secret in ("sim-chap-secret-1", "sim-chap-secret-2", "sim-psk-3"):
        assert secret not in blob
    assert any("registry not readable" in t["log"] for t in out["tasks"] if t.get("log"))
    only_gets(out, fleet)
    assert_clean(fleet, out)


def test_a_firmware_link_to_another_host_is_not_followed(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    other, _ = start_fleet(1, trusted=False)  # another BMC (another port on 127.0.0.1) that must see nothing
    link = f"https://{other[0].address}/redfish/v1/UpdateService/FirmwareInventory?$skip=6"
    fleet[0].inventory.firmware_next_link = link
    out = run_job(b, "firmware_inventory_scan", server_ids=ids)
    assert out["job"]["status"] == "failed"
    (failed,) = out["job"]["details"]["result"]["failed"]
    assert "leaves the BMC" in failed["error"]
    assert other[0].stats.requests == 0
    assert all(c["full_url"].startswith(f"https://{fleet[0].address}/") for c in out["cmds"])
    only_gets(out, fleet)
    assert_clean(fleet, out)


def test_fetch_event_logs_both_on_a_bmc_without_a_lifecycle_log(lab):
    b, start_fleet = lab
    fleet, ids = start_fleet(1)
    del fleet[0].inventory.logs["Lclog"]
    out = run_job(b, "fetch_event_logs", server_ids=ids, details={"log": "both", "limit": 5})
    assert out["job"]["status"] == "completed", out["job"]["details"].get("error")
    (res,) = out["job"]["details"]["result"]["servers"]
    assert res["counts"] == {"sel": 3} and len(res["entries"]) == 3
    assert "no lifecycle log service" in res["errors"]["lifecycle"]
    out = run_job(b, "fetch_event_logs", server_ids=ids, details={"log": "lifecycle"})
    assert out["job"]["status"] == "failed"  # asked for that log only: the server fails
    assert_clean(fleet, out)
