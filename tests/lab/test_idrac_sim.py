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


def _wait_state(s, base, headers, state, timeout=10.0) -> str:
    end = time.monotonic() + timeout
    while True:
        got = s.get(base + SYSTEM, headers=headers, timeout=5).json()["PowerState"]
        if got == state or time.monotonic() > end:
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
    fleet = idrac_sim(1, power_delay=0.5)
    s, base = _client(fleet), _base(fleet)
    h = {"X-Auth-Token": _login(s, base, fleet[0]).headers["X-Auth-Token"]}
    target = base + SYSTEM + "/Actions/ComputerSystem.Reset"
    r = s.post(target, json={"ResetType": "On"}, headers=h, timeout=5)
    assert r.status_code == 409 and _msg_id(r).endswith("PSU501")
    assert s.post(target, json={"ResetType": "GracefulShutdown"}, headers=h, timeout=5).status_code == 204
    assert s.get(base + SYSTEM, headers=h, timeout=5).json()["PowerState"] == "On"  # not yet
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
    b.reboot(0.6)
    with pytest.raises(requests.ConnectionError):
        s.get(base + SYSTEM, headers=h, timeout=2)
    time.sleep(1.0)
    assert s.get(base + SYSTEM, headers=h, timeout=5).status_code == 401  # the token died with the reboot
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
