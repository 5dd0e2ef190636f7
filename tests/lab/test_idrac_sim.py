"""The iDRAC stand-in answers like a Dell iDRAC (shapes, codes, sessions, faults)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests

from lab.idrac_sim import SESSIONS, SYSTEM


def _client(fleet) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = fleet.ca_file or True
    return s


def _base(fleet, i: int = 0) -> str:
    return f"{'https' if fleet.tls else 'http'}://{fleet[i].address}"


def _login(s: requests.Session, base: str, bmc, password: str | None = None) -> requests.Response:
    return s.post(
        base + SESSIONS, json={"UserName": bmc.username, "Password": password or bmc.password}, timeout=5
    )


def _msg_id(resp: requests.Response) -> str:
    return resp.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"]


def _wait_state(s, base, headers, state, timeout=30.0) -> str:
    """Poll the system's PowerState until it is `state` or `timeout` (generous: a loaded machine)."""
    return _wait_for(
        lambda: s.get(base + SYSTEM, headers=headers, timeout=5).json()["PowerState"], state, timeout
    )


def _wait_for(read, want, timeout=30.0):
    """Call read() until it returns `want` (or a value want(value) accepts); the last value."""
    end = time.monotonic() + timeout
    while True:
        got = read()
        if (want(got) if callable(want) else got == want) or time.monotonic() > end:
            return got
        time.sleep(0.05)


def test_service_root_and_dell_resources(idrac_sim):
    fleet = idrac_sim(1)
    s, base = _client(fleet), _base(fleet)
    root = s.get(base + "/redfish/v1/", timeout=5).json()
    assert root["Links"]["Sessions"]["@odata.id"] == SESSIONS
    assert root["SessionService"]["@odata.id"] == "/redfish/v1/SessionService"
    assert root["Vendor"] == "Dell"
    assert s.get(base + "/redfish/v1/Systems", timeout=5).status_code == 401  # no credentials
    r = _login(s, base, fleet[0])
    assert r.status_code == 201
    assert r.headers["Location"].startswith(SESSIONS + "/")
    h = {"X-Auth-Token": r.headers["X-Auth-Token"]}
    systems = s.get(base + "/redfish/v1/Systems", headers=h, timeout=5).json()
    assert systems["Members"] == [{"@odata.id": "/redfish/v1/Systems/System.Embedded.1"}]
    system = s.get(base + SYSTEM, headers=h, timeout=5).json()
    reset = system["Actions"]["#ComputerSystem.Reset"]
    assert "GracefulShutdown" in reset["ResetType@Redfish.AllowableValues"]
    assert system["Status"] == {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"}
    managers = s.get(base + "/redfish/v1/Managers", headers=h, timeout=5).json()
    assert managers["Members"][0]["@odata.id"].endswith("/iDRAC.Embedded.1")
    thermal = s.get(base + "/redfish/v1/Chassis/System.Embedded.1/Thermal", headers=h, timeout=5).json()
    assert thermal["Fans"] and thermal["Temperatures"]
    assert s.delete(base + r.headers["Location"], headers=h, timeout=5).status_code == 200
    assert fleet[0].counters()["sessions_open"] == 0


def test_power_transitions_take_time_and_already_on_is_409(idrac_sim):
    fleet = idrac_sim(1, power_delay=120)  # far longer than any scheduling hiccup: "not yet" is certain
    b = fleet[0]
    s, base = _client(fleet), _base(fleet)
    h = {"X-Auth-Token": _login(s, base, b).headers["X-Auth-Token"]}
    target = base + SYSTEM + "/Actions/ComputerSystem.Reset"
    r = s.post(target, json={"ResetType": "On"}, headers=h, timeout=5)
    assert r.status_code == 409 and _msg_id(r).endswith("PSU501")
    assert s.post(target, json={"ResetType": "GracefulShutdown"}, headers=h, timeout=5).status_code == 204
    assert s.get(base + SYSTEM, headers=h, timeout=5).json()["PowerState"] == "On"  # not yet
    b.set_power("On")
    b.power_delay = 0.2
    assert s.post(target, json={"ResetType": "GracefulShutdown"}, headers=h, timeout=5).status_code == 204
    assert _wait_state(s, base, h, "Off") == "Off"
    r = s.post(target, json={"ResetType": "Bogus"}, headers=h, timeout=5)
    assert r.status_code == 400 and "PropertyValueNotInList" in _msg_id(r)


def test_hung_os_ignores_graceful_shutdown(idrac_sim):
    fleet = idrac_sim(1, power_delay=0.1)
    fleet[0].os_responsive = False
    s, base = _client(fleet), _base(fleet)
    h = {"X-Auth-Token": _login(s, base, fleet[0]).headers["X-Auth-Token"]}
    s.post(base + SYSTEM + "/Actions/ComputerSystem.Reset", json={"ResetType": "GracefulShutdown"}, headers=h)
    assert _wait_state(s, base, h, "Off", timeout=0.5) == "On"


def _system(s, base, auth) -> dict:
    return s.get(base + SYSTEM, auth=auth, timeout=5).json()


def test_warm_restart_keeps_power_on_and_shows_in_last_reset_time_and_boot_progress(idrac_sim):
    fleet = idrac_sim(1, power_delay=0.3)
    b = fleet[0]
    s, base, auth = _client(fleet), _base(fleet), (b.username, b.password)
    before = _system(s, base, auth)
    assert before["BootProgress"]["LastState"] == "OSRunning" and before["LastResetTime"]
    r = s.post(base + SYSTEM + "/Actions/ComputerSystem.Reset", json={"ResetType": "ForceRestart"}, auth=auth)
    assert r.status_code == 204
    during = _system(s, base, auth)
    assert during["LastResetTime"] != before["LastResetTime"]  # recorded when the reset begins
    done = _wait_for(
        lambda: _system(s, base, auth), lambda sys: sys["BootProgress"]["LastState"] == "OSRunning"
    )
    assert done["BootProgress"]["LastState"] == "OSRunning"
    assert done["BootProgress"]["LastStateTime"] != before["BootProgress"]["LastStateTime"]
    assert {during["PowerState"], done["PowerState"]} == {"On"}  # a warm reset: never Off


def test_power_cycle_goes_off_then_on(idrac_sim):
    fleet = idrac_sim(1, power_delay=0.3)
    b = fleet[0]
    s, base, auth = _client(fleet), _base(fleet), (b.username, b.password)
    before = _system(s, base, auth)["LastResetTime"]
    s.post(base + SYSTEM + "/Actions/ComputerSystem.Reset", json={"ResetType": "PowerCycle"}, auth=auth)
    after = _wait_for(lambda: _system(s, base, auth), lambda sys: sys["LastResetTime"] != before)
    assert after["LastResetTime"] != before and after["PowerState"] == "On"
    assert after["BootProgress"]["LastState"] == "OSRunning"
    assert b.counters()["power_changes"] == ["Off", "On"]  # the sim's own record: no polling race


def test_hung_os_ignores_graceful_restart_and_old_firmware_has_no_markers(idrac_sim):
    fleet = idrac_sim(2, power_delay=0.1)
    hung, old = fleet[0], fleet[1]
    hung.os_responsive = False
    old.restart_markers = False
    s = _client(fleet)
    base, auth = _base(fleet, 0), (hung.username, hung.password)
    before = _system(s, base, auth)
    s.post(base + SYSTEM + "/Actions/ComputerSystem.Reset", json={"ResetType": "GracefulRestart"}, auth=auth)
    after = _system(s, base, auth)
    assert (after["LastResetTime"], after["BootProgress"]) == (
        before["LastResetTime"],
        before["BootProgress"],
    )
    assert hung.stats.resets == ["GracefulRestart"]
    system = _system(s, _base(fleet, 1), (old.username, old.password))
    assert "LastResetTime" not in system and "BootProgress" not in system


def test_session_limit_answers_rac0218(idrac_sim):
    fleet = idrac_sim(1, session_limit=2)
    s, base = _client(fleet), _base(fleet)
    assert _login(s, base, fleet[0]).status_code == 201
    assert _login(s, base, fleet[0]).status_code == 201
    r = _login(s, base, fleet[0])
    assert r.status_code == 503 and _msg_id(r).endswith("RAC0218")
    c = fleet[0].counters()
    assert c["sessions_open"] == 2 and c["max_sessions_open"] == 2 and c["session_limit_rejections"] == 1


def test_wrong_password_and_basic_auth_switch(idrac_sim):
    fleet = idrac_sim(1)
    b = fleet[0]
    s, base = _client(fleet), _base(fleet)
    r = _login(s, base, b, password="wrong")
    assert r.status_code == 401 and "AccessDenied" in _msg_id(r)
    assert s.get(base + SYSTEM, auth=(b.username, b.password), timeout=5).status_code == 200
    b.basic_auth = False
    assert s.get(base + SYSTEM, auth=(b.username, b.password), timeout=5).status_code == 401


def test_injected_faults_then_recovery(idrac_sim):
    fleet = idrac_sim(1)
    b = fleet[0]
    s, base = _client(fleet), _base(fleet)
    b.inject("SYS518", 2)
    b.inject("SWC0700", 1)
    auth = (b.username, b.password)
    codes = [s.get(base + SYSTEM, auth=auth, timeout=5) for _ in range(4)]
    assert [r.status_code for r in codes] == [503, 503, 400, 200]
    assert _msg_id(codes[0]).endswith("SYS518") and _msg_id(codes[2]).endswith("SWC0700")


def test_reboot_drops_sessions_and_refuses_connections(idrac_sim):
    fleet = idrac_sim(1)
    b = fleet[0]
    s, base = _client(fleet), _base(fleet)
    h = {"X-Auth-Token": _login(s, base, b).headers["X-Auth-Token"]}
    b.reboot(3.0)  # long enough that the next request certainly meets the BMC down
    with pytest.raises(requests.ConnectionError):
        s.get(base + SYSTEM, headers=h, timeout=2)

    def answer() -> int | None:
        try:
            return requests.get(base + SYSTEM, headers=h, timeout=2, verify=s.verify).status_code
        except requests.ConnectionError:
            return None  # still rebooting

    assert _wait_for(answer, lambda code: code is not None) == 401  # the token died with the reboot
    assert b.counters()["sessions_open"] == 0 and b.counters()["reboots"] == 1


def test_health_injection_rolls_up(idrac_sim):
    fleet = idrac_sim(1)
    b = fleet[0]
    b.set_health("Fan.Embedded.2A", "Critical")
    b.set_health("PSU.Slot.1", "Warning")
    s, base = _client(fleet), _base(fleet)
    auth = (b.username, b.password)
    assert s.get(base + SYSTEM, auth=auth, timeout=5).json()["Status"]["HealthRollup"] == "Critical"
    fans = s.get(base + "/redfish/v1/Chassis/System.Embedded.1/Thermal", auth=auth, timeout=5).json()["Fans"]
    assert [f["Status"]["Health"] for f in fans] == ["OK", "Critical"]
    psus = s.get(base + "/redfish/v1/Chassis/System.Embedded.1/Power", auth=auth, timeout=5).json()
    assert psus["PowerSupplies"][0]["Status"]["Health"] == "Warning"


def test_tls_trusted_only_with_the_ca_file(idrac_sim):
    fleet = idrac_sim(1, tls=True)
    assert _client(fleet).get(_base(fleet) + "/redfish/v1", timeout=5).status_code == 200
    bare = requests.Session()
    bare.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        bare.get(_base(fleet) + "/redfish/v1", timeout=5)


def test_cli_prints_one_json_line_and_serves_stats():
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.idrac_sim", "--servers", "3", "--tls", "--power-delay", "0.1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert len(info["servers"]) == 3 and info["ca_file"] and info["scheme"] == "https"
        first = info["servers"][0]
        assert first["address"].startswith("127.0.0.1:") and first["password"]
        s = requests.Session()
        s.trust_env = False
        s.verify = info["ca_file"]
        url = f"https://{first['address']}"
        assert s.get(url + SYSTEM, auth=(first["username"], first["password"]), timeout=5).status_code == 200
        stats = requests.get(info["control_url"], timeout=5).json()
        assert stats["servers"][0]["requests"] == 1 and stats["max_sessions_ever"] == 0
        r = s.post(url + "/lab/control", json={"faults": {"SYS518": 1}}, timeout=5)
        assert r.status_code == 200
        assert s.get(url + SYSTEM, auth=(first["username"], first["password"]), timeout=5).status_code == 503
    finally:
        proc.terminate()
        proc.wait(10)


def test_method_counters_auth401_fault_and_inventory_switches(idrac_sim):
    fleet = idrac_sim(1)
    bmc = fleet[0]
    s, base = _client(fleet), _base(fleet)
    resp = _login(s, base, bmc)
    headers = {"X-Auth-Token": resp.headers["X-Auth-Token"]}
    bmc.inject("AUTH401", 1)
    assert s.get(base + SYSTEM, headers=headers, timeout=5).status_code == 401
    assert bmc.counters()["sessions_open"] == 1  # the spurious 401 does not end the session
    reg = "/redfish/v1/Registries/BiosAttributeRegistry/BiosAttributeRegistry.v1_0_3"
    assert s.get(base + reg, headers=headers, timeout=5).status_code == 200
    bmc.inventory.registry_readable = False
    assert s.get(base + reg, headers=headers, timeout=5).status_code == 404
    bmc.inventory.firmware_next_link = "https://elsewhere.invalid/x"
    inv = s.get(base + "/redfish/v1/UpdateService/FirmwareInventory", headers=headers, timeout=5).json()
    assert inv["Members@odata.nextLink"] == "https://elsewhere.invalid/x"
    sid = resp.headers["Location"].rsplit("/", 1)[1]
    assert s.delete(base + resp.headers["Location"], headers=headers, timeout=5).status_code == 200
    assert bmc.stats.session_ids == [sid]
    assert bmc.writes() == [("POST", SESSIONS), ("DELETE", f"{SESSIONS}/{sid}")]
    assert bmc.counters()["methods"] == {"POST": 1, "GET": 4, "DELETE": 1}
