"""The OME stand-in behaves as a real appliance does, traps included (tested with plain requests)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests

from lab.ome_sim import Fleet


def _login(sim, session: requests.Session, password: str | None = None) -> tuple[str, str]:
    r = session.post(
        sim.url + "/api/SessionService/Sessions",
        json={"UserName": sim.username, "Password": password or sim.password, "SessionType": "API"},
    )
    assert r.status_code == 201, r.text
    return r.headers["X-Auth-Token"], r.json()["Id"]


@pytest.fixture
def sim(ome_sim):
    return ome_sim(300, https=False)


def test_https_needs_the_ca_and_works_with_it(ome_sim):
    sim = ome_sim(20)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(sim.url + "/api/ApplicationService/Info", timeout=5)
    r = requests.get(
        sim.url + "/api/ApplicationService/Info",
        auth=(sim.username, sim.password),
        verify=sim.ca_file,
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["Name"] == "OpenManage Enterprise"


def test_session_lifecycle_is_counted(sim):
    s = requests.Session()
    token, sid = _login(sim, s)
    assert sim.stats()["open_sessions"] == 1
    assert s.get(sim.url + "/api/ApplicationService/Info").status_code == 401  # no token
    s.headers["X-Auth-Token"] = token
    assert s.get(sim.url + "/api/ApplicationService/Info").status_code == 200
    assert s.delete(sim.url + f"/api/SessionService/Sessions('{sid}')").status_code == 204
    st = sim.stats()
    assert (st["open_sessions"], st["sessions_created"], st["sessions_deleted"]) == (0, 1, 1)
    assert s.get(sim.url + "/api/ApplicationService/Info").status_code == 401  # token is dead


def test_wrong_password_is_401_with_csec5002(sim):
    r = requests.post(
        sim.url + "/api/SessionService/Sessions",
        json={"UserName": sim.username, "Password": "nope", "SessionType": "API"},
    )
    assert r.status_code == 401
    assert r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "CSEC5002"
    assert sim.stats()["sessions_created"] == 0


def test_session_limit_per_user(ome_sim):
    sim = ome_sim(5, https=False, max_sessions=3)
    s = requests.Session()
    for _ in range(3):
        _login(sim, s)
    r = s.post(
        sim.url + "/api/SessionService/Sessions",
        json={"UserName": sim.username, "Password": sim.password, "SessionType": "API"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"] == "CURS1209"


def test_default_page_is_50_and_next_link_drops_the_filter(sim):
    s = requests.Session()
    s.auth = (sim.username, sim.password)
    r = s.get(sim.url + "/api/DeviceService/Devices?$filter=Type%20eq%201000").json()
    assert len(r["value"]) == 50
    servers = r["@odata.count"]
    assert servers == len(sim.fleet.servers()) < len(sim.fleet.devices)
    assert all(d["Type"] == 1000 for d in r["value"])
    assert r["@odata.nextLink"] == "/api/DeviceService/Devices?$skip=50&$top=50"
    unfiltered = s.get(sim.url + r["@odata.nextLink"]).json()
    assert unfiltered["@odata.count"] == len(sim.fleet.devices)


def test_plus_is_not_a_space(sim):
    s = requests.Session()
    s.auth = (sim.username, sim.password)
    assert s.get(sim.url + "/api/DeviceService/Devices?$filter=Type+eq+1000").status_code == 400


def test_top_skip_read_every_device_once(sim):
    s = requests.Session()
    s.auth = (sim.username, sim.password)
    ids, skip = [], 0
    while True:
        page = s.get(sim.url + f"/api/DeviceService/Devices?$top=70&$skip={skip}").json()
        ids += [d["Id"] for d in page["value"]]
        skip += 70
        if skip >= page["@odata.count"]:
            break
    assert len(ids) == len(set(ids)) == 300


def test_fleet_has_the_traps():
    fleet = Fleet(200, seed=3)
    by_id = fleet.by_id
    assert {d["Type"] for d in fleet.devices} == {1000, 2000, 4000}
    assert all(d["DeviceServiceTag"] is None for d in fleet.devices if d["Type"] == 4000)
    assert {d["Status"] for d in fleet.devices} >= {1000, 2000, 3000, 4000, 5000}
    assert {d["PowerState"] for d in fleet.devices} >= {1, 17, 18, 20, 21}
    sled = by_id[fleet.traps["identifier_differs"]]
    assert sled["Identifier"] != sled["DeviceServiceTag"]
    disc = by_id[fleet.traps["disconnected"]]
    assert (disc["PowerState"], disc["ConnectionState"]) == (1, False)
    assert by_id[fleet.traps["managed_state_4000"]]["ManagedState"] == 4000
    assert by_id[fleet.traps["blade"]]["SlotConfiguration"]["ChassisServiceTag"] == "CHAS001"
    assert by_id[fleet.traps["no_service_tag"]]["DeviceServiceTag"] == ""
    first = by_id[fleet.traps["ipv6_unspecified_first"]]["DeviceManagement"][0]
    assert first["NetworkAddress"] == "[::]"
    # deterministic for a seed, unique service tags
    assert Fleet(200, seed=3).devices == fleet.devices
    tags = [d["DeviceServiceTag"] for d in fleet.devices if d["DeviceServiceTag"]]
    assert len(tags) == len(set(tags))


def test_every_management_address_is_loopback():
    """The OME sync writes these into servers.ip_address; an executor job over all servers must
    never be led off this machine (only "[::]" and "" are left as the unusable trap entries)."""
    fleet = Fleet(2000, seed=5)
    addresses = [
        e["NetworkAddress"]
        for d in fleet.devices
        for e in d["DeviceManagement"]
        if e["NetworkAddress"] not in ("", "[::]")
    ]
    assert len(addresses) >= 1990  # all but the trap devices without a usable address
    assert all(ipaddress.ip_address(a.strip("[]")).is_loopback for a in addresses), [
        a for a in addresses if not ipaddress.ip_address(a.strip("[]")).is_loopback
    ]
    urls = [
        p["ManagementURL"]
        for d in fleet.devices
        for e in d["DeviceManagement"]
        for p in e["ManagementProfile"]
        if p.get("ManagementURL")
    ]
    hosts = {ipaddress.ip_address(urlsplit(u).hostname or "") for u in urls}
    assert all(h.is_loopback or h.is_unspecified for h in hosts)
    # unique per device, as the edge function refuses a batch with an address clash
    per_device = [
        a
        for d in fleet.devices
        if d["DeviceServiceTag"]
        for a in {e["NetworkAddress"] for e in d["DeviceManagement"]} - {"", "[::]"}
    ]
    assert len(per_device) == len(set(per_device))


def test_inventory_both_shapes(sim):
    s = requests.Session()
    s.auth = (sim.username, sim.password)
    shapes = set()
    for dev_id in list(sim.fleet.inventory)[:20]:
        body = s.get(sim.url + f"/api/DeviceService/Devices({dev_id})/InventoryDetails('serverProcessors')")
        assert body.status_code == 200
        shapes.add("value" in body.json())
    assert shapes == {True, False}


def test_page_fault_then_recovery(sim):
    sim.faults.fail_page(50, 503, times=2)
    s = requests.Session()
    s.auth = (sim.username, sim.password)
    url = sim.url + "/api/DeviceService/Devices?$top=50&$skip=50"
    assert [s.get(url).status_code for _ in range(3)] == [503, 503, 200]


def test_session_expires_after_k_requests(sim):
    s = requests.Session()
    token, _ = _login(sim, s)
    s.headers["X-Auth-Token"] = token
    sim.faults.expire_after_requests = 2
    codes = [s.get(sim.url + "/api/ApplicationService/Info").status_code for _ in range(3)]
    assert codes == [200, 200, 401]
    assert sim.stats()["open_sessions"] == 0


def test_command_line_prints_one_json_line_and_serves_stats():
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.ome_sim", "--devices", "30", "--http"], stdout=subprocess.PIPE, text=True
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"url", "username", "password", "ca_file"}
        assert info["url"].startswith("http://127.0.0.1:")
        requests.get(info["url"] + "/api/DeviceService/Devices", auth=(info["username"], info["password"]))
        stats = requests.get(info["url"] + "/_sim/stats").json()
        assert stats["requests_by_path"] == {"/api/DeviceService/Devices": 1}
        r = requests.post(info["url"] + "/_sim/faults", json={"delay_seconds": 0.01})
        assert r.json()["delay_seconds"] == 0.01
    finally:
        proc.terminate()
        proc.wait(10)
