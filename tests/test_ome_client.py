"""Unit tests of lib/ome.py (client with `responses`, normalisation) and lib/sync/delivery.py.

Payloads follow what real OME appliances return (shapes of Dell's API guide and the samples in
dellemc-openmanage-ansible-modules), trimmed to the fields that matter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from lib.config import OmeSettings
from lib.errors import AuthError, ConfigError, RemoteError
from lib.http import HttpClient, TLSConfig
from lib.ome import (
    Device,
    OmeClient,
    PagingStats,
    Skipped,
    base_url,
    health_name,
    inventory_info,
    management_address,
    normalise,
    parse_ome_time,
    power_name,
    summarise_inventory,
)
from lib.sync.delivery import BatchOutcome, deliver
from lib.sync.ome import judge_reply

URL = "https://ome.test:443"


def recorded_device(**over):
    """A server as OME 3.x/4.x lists it under /api/DeviceService/Devices."""
    dev = {
        "@odata.type": "#DeviceService.Device",
        "@odata.id": "/api/DeviceService/Devices(10074)",
        "Id": 10074,
        "Type": 1000,
        "Identifier": "GT9SNK2",
        "DeviceServiceTag": "GT9SNK2",
        "ChassisServiceTag": None,
        "Model": "PowerEdge R640",
        "PowerState": 17,
        "ManagedState": 3000,
        "Status": 1000,
        "ConnectionState": True,
        "AssetTag": None,
        "SystemId": 1814,
        "DeviceName": "esx01.lab",
        "LastInventoryTime": "2020-02-04 11:30:06.344",
        "LastStatusTime": "2020-02-04 13:10:13.203",
        "DeviceSubscription": None,
        "SlotConfiguration": {},
        "DeviceManagement": [
            {
                "ManagementId": 4002,
                "NetworkAddress": "100.96.24.28",
                "MacAddress": "d0:94:66:11:22:33",
                "ManagementType": 2,
                "InstrumentationName": "esx01",
                "DnsName": "idrac-gt9snk2",
                "ManagementProfile": [
                    {
                        "ManagementProfileId": 4002,
                        "ProfileId": "WSMAN_OOB",
                        "ManagementId": 4002,
                        "AgentName": "iDRAC",
                        "Version": "4.00.00.00",
                        "ManagementURL": "https://100.96.24.28:443/",
                        "HasCreds": 0,
                        "Status": 1000,
                        "StatusDateTime": "2020-02-04 13:10:13.203",
                    }
                ],
            }
        ],
        "Actions": None,
    }
    dev.update(over)
    return dev


def mgmt(address, agent="iDRAC", version="5.10.00.00"):
    return {"NetworkAddress": address, "ManagementProfile": [{"AgentName": agent, "Version": version}]}


# -- normalisation ---------------------------------------------------------------------------------------
def test_normalise_recorded_server():
    dev = normalise(recorded_device())
    assert dev == Device(
        device_id="10074",
        service_tag="GT9SNK2",
        ip_address="100.96.24.28",
        model="PowerEdge R640",
        hostname="esx01.lab",
        idrac_firmware="4.00.00.00",
        overall_health="OK",
        power_state="On",
    )
    assert set(dev.payload()) == {
        "device_id",
        "service_tag",
        "ip_address",
        "model",
        "hostname",
        "idrac_firmware",
        "overall_health",
        "power_state",
    }


def test_service_tag_not_identifier():
    dev = normalise(recorded_device(Identifier="MX-SLED-1", DeviceServiceTag="ABC1234"))
    assert dev.service_tag == "ABC1234"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([mgmt("[::]"), mgmt(""), mgmt("192.168.0.5")], ("192.168.0.5", "5.10.00.00")),
        ([mgmt("10.0.0.9", "OMSA", "11.0"), mgmt("10.0.0.8")], ("10.0.0.8", "5.10.00.00")),
        ([mgmt("[2001:db8::12]")], ("2001:db8::12", "5.10.00.00")),
        ([mgmt("[::]", "OMSA"), mgmt("10.1.1.1", "OMSA", "9")], ("10.1.1.1", None)),
        ([mgmt("[::]"), mgmt(" ")], (None, None)),
        ([], (None, None)),
    ],
)
def test_management_address(entries, expected):
    assert management_address({"DeviceManagement": entries}) == expected


def test_skips_with_reasons():
    iom = normalise(recorded_device(Type=4000, DeviceServiceTag=None, DeviceName="IOM-A1"))
    assert isinstance(iom, Skipped) and "no service tag" in iom.reason and "IOM-A1" in iom.ident
    noaddr = normalise(recorded_device(DeviceManagement=[mgmt("[::]")]))
    assert isinstance(noaddr, Skipped) and noaddr.ident == "GT9SNK2" and "address" in noaddr.reason


def test_health_and_power_codes():
    assert [health_name(c) for c in (1000, 2000, 3000, 4000, 5000, None)] == [
        "OK",
        "Unknown",
        "Warning",
        "Critical",
        "Unknown",
        "Unknown",
    ]
    assert [power_name(c) for c in (17, 18, 20, 21, 1, 2, None)] == [
        "On",
        "Off",
        "PoweringOn",
        "PoweringOff",
        "Unknown",
        "Unknown",
        "Unknown",
    ]


def test_ome_time_is_utc():
    assert parse_ome_time("2020-02-04 11:30:06.344") == datetime(2020, 2, 4, 11, 30, 6, 344000, tzinfo=UTC)
    assert parse_ome_time("") is None and parse_ome_time("garbage") is None


def test_inventory_both_shapes_and_summary():
    detail = {
        "InventoryType": "serverProcessors",
        "InventoryInfo": [{"NumberOfCores": 16}, {"NumberOfCores": 16}],
    }
    assert len(inventory_info(detail, "serverProcessors")) == 2
    assert len(inventory_info({"value": [detail]}, "serverProcessors")) == 2
    assert inventory_info({"InventoryInfo": {"Size": 1}}, "x") == [{"Size": 1}]
    inv = summarise_inventory(
        {
            "serverProcessors": {"value": [detail]},
            "serverMemoryDevices": {"InventoryInfo": [{"Size": 16384}] * 12},
            "deviceSoftware": {
                "InventoryInfo": [
                    {
                        "SoftwareType": "FRMW",
                        "DeviceDescription": "Integrated Dell Remote Access Controller",
                        "Version": "7.00.00.00",
                    },
                    {"SoftwareType": "BIOS", "DeviceDescription": "BIOS", "Version": "2.19.1"},
                ]
            },
        }
    )
    assert (inv.bios_version, inv.cpu_count, inv.memory_gb, inv.idrac_firmware) == (
        "2.19.1",
        2,
        192,
        "7.00.00.00",
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("ome.lab", "https://ome.lab:443"),
        ("10.0.0.5:8443", "https://10.0.0.5:8443"),
        ("https://ome.lab/", "https://ome.lab:443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("fd00::5", "https://[fd00::5]:443"),
    ],
)
def test_base_url(host, url):
    assert base_url(host) == url


def test_base_url_rejects_paths_and_schemes():
    with pytest.raises(ConfigError):
        base_url("https://ome.lab/api")
    with pytest.raises(ConfigError):
        base_url("ftp://ome.lab")


# -- client ------------------------------------------------------------------------------------------------
def settings(page_size=2):
    return OmeSettings(
        host="ome.test",
        port=443,
        username="admin",
        password="s3cret-pw",
        tls=TLSConfig(),
        page_size=page_size,
        timeout=5,
        inventory_threads=2,
        batch_size=200,
    )


def client(page_size=2):
    http = HttpClient(URL, TLSConfig(), system="OME", sleep=lambda s: None)
    return OmeClient(settings(page_size), http=http)


def add_login(rsps, token="tok-1", sid="abc123"):
    rsps.post(
        URL + "/api/SessionService/Sessions",
        status=201,
        headers={"X-Auth-Token": token},
        json={"Id": sid, "UserName": "admin"},
    )
    rsps.delete(URL + f"/api/SessionService/Sessions('{sid}')", status=204)


def page(values, count, next_link=None):
    body = {
        "@odata.context": "/api/$metadata#Collection(DeviceService.Device)",
        "@odata.count": count,
        "value": values,
    }
    if next_link:
        body["@odata.nextLink"] = next_link
    return body


def qs(call):
    return parse_qs(urlsplit(call.request.url).query)


@responses.activate
def test_login_body_token_and_logout():
    add_login(responses)
    responses.get(URL + "/api/ApplicationService/Info", json={"Version": "4.1.0"})
    with client() as c:
        assert c.app_info()["Version"] == "4.1.0"
    login, info, logout = responses.calls
    assert json.loads(login.request.body) == {
        "UserName": "admin",
        "Password": "s3cret-pw",
        "SessionType": "API",
    }
    assert info.request.headers["X-Auth-Token"] == "tok-1"
    assert logout.request.method == "DELETE" and logout.request.headers["X-Auth-Token"] == "tok-1"


@responses.activate
def test_logout_happens_after_an_error():
    add_login(responses)
    responses.get(URL + "/api/ApplicationService/Info", status=404, json={})
    with pytest.raises(RemoteError), client() as c:
        c.app_info()
    assert responses.calls[-1].request.method == "DELETE"


@responses.activate
def test_wrong_password_is_auth_error_with_hint():
    responses.post(
        URL + "/api/SessionService/Sessions",
        status=401,
        json={
            "error": {
                "@Message.ExtendedInfo": [
                    {"MessageId": "CSEC5002", "Message": "invalid username and/or password"}
                ]
            }
        },
    )
    with pytest.raises(AuthError) as err, client():
        pass
    assert "OME_PASSWORD" in err.value.hint and "s3cret-pw" not in str(err.value)


@responses.activate
def test_session_limit_has_its_own_hint():
    responses.post(
        URL + "/api/SessionService/Sessions",
        status=400,
        json={"error": {"@Message.ExtendedInfo": [{"MessageId": "CURS1209", "Message": "max"}]}},
    )
    with pytest.raises(AuthError) as err, client():
        pass
    assert "100 sessions" in err.value.hint


@responses.activate
def test_reauthenticates_once_on_401():
    responses.post(
        URL + "/api/SessionService/Sessions", status=201, headers={"X-Auth-Token": "old"}, json={"Id": "s1"}
    )
    responses.post(
        URL + "/api/SessionService/Sessions", status=201, headers={"X-Auth-Token": "new"}, json={"Id": "s2"}
    )
    responses.get(URL + "/api/ApplicationService/Info", status=401, json={})
    responses.get(URL + "/api/ApplicationService/Info", json={"Version": "4.1.0"})
    responses.delete(URL + "/api/SessionService/Sessions('s1')", status=204)
    responses.delete(URL + "/api/SessionService/Sessions('s2')", status=204)
    with client() as c:
        assert c.app_info()["Version"] == "4.1.0"
    # the old session is deleted (with its own token) before the new login: no leaked session
    assert [(c.request.method, c.request.headers.get("X-Auth-Token")) for c in responses.calls[1:5]] == [
        ("GET", "old"),
        ("DELETE", "old"),
        ("POST", None),
        ("GET", "new"),
    ]
    assert responses.calls[2].request.url.endswith("Sessions('s1')")
    assert responses.calls[-1].request.url.endswith("Sessions('s2')")


@responses.activate
def test_second_401_is_an_auth_error():
    add_login(responses, sid="s1")
    responses.get(URL + "/api/ApplicationService/Info", status=401, json={})
    with pytest.raises(AuthError), client() as c:
        c.app_info()


@responses.activate
def test_paging_uses_top_skip_and_filter_with_20_not_following_next_link():
    add_login(responses)
    devs = [recorded_device(Id=i, DeviceServiceTag=f"T{i}") for i in range(5)]
    nl = "/api/DeviceService/Devices?$skip=2&$top=2"  # OME drops $filter here
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[0:2], 5, nl))
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[2:4], 5, nl))
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[4:5], 5))
    stats = PagingStats()
    with client() as c:
        ids = [d["Id"] for p in c.iter_pages(stats=stats) for d in p.devices]
    assert ids == [0, 1, 2, 3, 4] and stats.pages == 3 and stats.total == 5
    gets = [call for call in responses.calls if call.request.method == "GET"]
    assert [qs(g)["$skip"] for g in gets] == [["0"], ["2"], ["4"]]
    assert all(qs(g)["$filter"] == ["Type eq 1000"] and qs(g)["$top"] == ["2"] for g in gets)
    assert all("%20" in g.request.url and "+" not in g.request.url for g in gets)


@responses.activate
def test_failed_page_is_retried_then_read():
    add_login(responses)
    devs = [recorded_device(Id=i, DeviceServiceTag=f"T{i}") for i in range(3)]
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[0:2], 3))
    responses.get(URL + "/api/DeviceService/Devices", status=500, json={})
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[2:], 3))
    with client() as c:
        ids = [d["Id"] for p in c.iter_pages() for d in p.devices]
    assert ids == [0, 1, 2]


@responses.activate
def test_page_failing_for_good_is_recorded_not_silently_short():
    add_login(responses)
    devs = [recorded_device(Id=i, DeviceServiceTag=f"T{i}") for i in range(5)]
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[0:2], 5))
    for _ in range(4):
        responses.get(URL + "/api/DeviceService/Devices", status=503, json={})
    responses.get(URL + "/api/DeviceService/Devices", json=page(devs[4:], 5))
    stats = PagingStats()
    with client() as c:
        ids = [d["Id"] for p in c.iter_pages(stats=stats) for d in p.devices]
    assert ids == [0, 1, 4]
    assert [(f.skip, f.top) for f in stats.failures] == [(2, 2)]


@responses.activate
def test_without_count_the_next_link_decides():
    add_login(responses)
    devs = [recorded_device(Id=i, DeviceServiceTag=f"T{i}") for i in range(3)]
    first = {"value": devs[:2], "@odata.nextLink": "/api/DeviceService/Devices?$skip=2&$top=2"}
    responses.get(URL + "/api/DeviceService/Devices", json=first)
    responses.get(URL + "/api/DeviceService/Devices", json={"value": devs[2:]})
    with client() as c:
        assert [d["Id"] for p in c.iter_pages() for d in p.devices] == [0, 1, 2]


@responses.activate
def test_inventory_pool_fills_fields_and_reports_errors():
    add_login(responses)
    base = URL + "/api/DeviceService/Devices(7)/InventoryDetails"
    responses.get(
        base + "('deviceSoftware')", json={"InventoryInfo": [{"SoftwareType": "BIOS", "Version": "1.2.3"}]}
    )
    responses.get(
        base + "('serverProcessors')",
        json={"value": [{"InventoryType": "serverProcessors", "InventoryInfo": [{}, {}]}]},
    )
    responses.get(base + "('serverMemoryDevices')", json={"InventoryInfo": [{"Size": 32768}] * 4})
    responses.get(
        URL + "/api/DeviceService/Devices(8)/InventoryDetails('deviceSoftware')", status=404, json={}
    )
    errors = []
    with client() as c:
        out = c.with_inventory(
            [Device("7", "T7", "10.0.0.7"), Device("8", "T8", "10.0.0.8")],
            on_error=lambda d, e: errors.append(d.service_tag),
        )
    assert (out[0].bios_version, out[0].cpu_count, out[0].memory_gb) == ("1.2.3", 2, 128)
    assert out[1] == Device("8", "T8", "10.0.0.8") and errors == ["T8"]


# -- the backend's verdict and delivery ----------------------------------------------------------------
def test_judge_reply_sees_the_trap():
    trap = {
        "success": True,
        "summary": {"total": 3, "new": 3, "updated": 0, "auto_linked": 0, "errors": 1},
        "errors": [
            'Bulk upsert failed: duplicate key value violates unique constraint "servers_ip_address_key"'
        ],
    }
    verdict = judge_reply(trap)
    assert not verdict.ok and verdict.message.startswith("Bulk upsert failed:") and verdict.new == 0
    ok = judge_reply({"success": True, "summary": {"new": 2, "updated": 1, "auto_linked": 1}, "errors": []})
    assert ok.ok and (ok.new, ok.updated, ok.auto_linked) == (2, 1, 1)
    assert not judge_reply({"success": False, "error": "boom"}).ok


def fake_backend(bad, calls):
    """Saves a batch only when it holds none of the `bad` items (one upsert statement)."""

    def send(batch):
        calls.append(list(batch))
        hit = [x for x in batch if x in bad]
        if hit:
            return BatchOutcome.failed(f"Bulk upsert failed: conflict on {hit[0]}")
        return BatchOutcome(ok=True, new=len(batch))

    return send


def test_delivery_isolates_bad_items_and_saves_the_rest():
    calls = []
    result = deliver(range(100), fake_backend({13, 77}, calls), batch_size=40)
    assert result.sent == 98 and result.new == 98
    assert sorted((r.item, r.reason) for r in result.failed) == [
        (13, "Bulk upsert failed: conflict on 13"),
        (77, "Bulk upsert failed: conflict on 77"),
    ]
    assert result.batches == 3
    assert result.requests < 40  # bisection, not one request per item


def test_delivery_dedupes_within_a_batch():
    calls = []
    result = deliver(["a", "b", "a", "c"], fake_backend(set(), calls), batch_size=10, key=lambda x: x)
    assert calls == [["a", "b", "c"]] and [r.item for r in result.duplicates] == ["a"]


def test_delivery_stops_probing_a_backend_that_fails_everything():
    calls = []

    def down(batch):
        calls.append(batch)
        return BatchOutcome.failed("500: database is down")

    result = deliver(range(64), down, batch_size=64)
    assert len(result.failed) == 64 and result.sent == 0
    assert len(calls) < 50  # a full bisection would be 127 requests


def test_many_adjacent_bad_items_are_still_isolated_one_by_one():
    calls = []
    bad = set(range(100, 140))  # a whole rack re-addressed: 40 conflicts next to each other
    result = deliver(range(200), fake_backend(bad, calls), batch_size=200)
    assert sorted(r.item for r in result.failed) == sorted(bad)
    assert result.sent == 160


def test_parallel_delivery_gives_the_same_result():
    calls = []
    result = deliver(range(500), fake_backend({5, 250, 499}, calls), batch_size=50, workers=3)
    assert result.sent == 497 and result.new == 497
    assert sorted(r.item for r in result.failed) == [5, 250, 499]


def test_parallel_delivery_raises_a_fatal_error():
    def boom(batch):
        raise RuntimeError("backend gone")

    with pytest.raises(RuntimeError):
        deliver(range(100), boom, batch_size=10, workers=2)


def test_delivery_shuts_its_pool_down_when_the_source_raises():
    """Ctrl-C or an OME failure while batches are in flight: deliver() returns (raising) only once
    nothing is sending any more, and the counts of what was saved are in the caller's result."""
    import threading

    from lib.sync.delivery import DeliveryResult

    in_flight, started_after = [0], []
    lock, release, ended = threading.Lock(), threading.Event(), threading.Event()

    def slow(batch):
        with lock:
            in_flight[0] += 1
            if ended.is_set():
                started_after.append(batch)
        release.wait(10)
        with lock:
            in_flight[0] -= 1
        return BatchOutcome(ok=True, new=len(batch))

    def source():
        yield from range(20)  # two batches of 10 go out
        threading.Timer(0.5, release.set).start()  # the backend answers a moment later
        raise KeyboardInterrupt

    result = DeliveryResult()
    with pytest.raises(KeyboardInterrupt):
        deliver(source(), slow, batch_size=10, workers=2, result=result)
    ended.set()
    with lock:
        assert in_flight[0] == 0, "a batch was still being sent after deliver() ended"
    assert started_after == []
    assert result.sent == 20 and result.new == 20  # what was saved before the interrupt


def test_delivery_keeps_groups_apart():
    calls = []
    items = ["a1", "b1", "a2", "b2", "a3"]
    result = deliver(items, fake_backend(set(), calls), batch_size=2, group=lambda x: x[0])
    assert sorted(calls) == [["a1", "a2"], ["a3"], ["b1", "b2"]]
    assert result.sent == 5


def test_report_absorbs_a_delivery_result():
    from lib.sync.common import SyncReport

    calls = []
    result = deliver(["x", "bad", "y", "x"], fake_backend({"bad"}, calls), batch_size=4, key=lambda s: s)
    report = SyncReport("test")
    report.absorb(result, lambda s: s.upper())
    assert (report.sent, report.new) == (2, 2)
    assert [(i.ident, i.reason) for i in report.failed] == [("BAD", "Bulk upsert failed: conflict on bad")]
    assert [i.ident for i in report.skipped] == ["X"]
    assert report.requests["dsm"] == result.requests and report.extra["isolation_requests"] > 0
    report.fail(AuthError("DSM rejected the token"))
    data = report.to_dict()
    assert data["status"] == "failed" and data["error"] == "DSM rejected the token" and data["sent"] == 2


class FakeEdge:
    def __init__(self, answer):
        self.answer, self.bodies = answer, []

    def call(self, function, body, *, idempotent=False):
        assert idempotent  # both upserts are keyed, so a resend changes nothing
        self.bodies.append((function, body))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_one_edge_sender_for_both_functions():
    from lib.sync import ome as ome_sync
    from lib.sync import vcenter as vc_sync

    trap = {"success": True, "summary": {"new": 1}, "errors": ["Bulk upsert failed: x"]}
    dev = Device("1", "TAG1", "192.0.2.1")
    edge = FakeEdge(trap)
    assert not ome_sync.edge_sender(edge, scheduled=True)([dev]).ok  # openmanage-sync's trap
    assert edge.bodies == [
        ("openmanage-sync", {"devices": [dev.payload()], "manual": False, "scheduled": True})
    ]
    edge = FakeEdge(trap)
    assert vc_sync.edge_sender(edge, lambda b: {"hosts": b})(["h"]).ok  # vcenter-sync has no such trap
    assert edge.bodies == [("vcenter-sync", {"hosts": ["h"]})]
    # a refused batch is split; a rejected credential ends the run
    refused = FakeEdge(RemoteError("conflict", status=409, remote_message="duplicate key"))
    assert vc_sync.edge_sender(refused, lambda b: {"hosts": b})(["h"]).message == "duplicate key"
    with pytest.raises(AuthError):
        ome_sync.edge_sender(FakeEdge(AuthError("401")), scheduled=False)([dev])


@responses.activate
def test_the_session_token_is_registered_as_a_secret():
    from lib.logs import redact

    add_login(responses, token="x-auth-tok-77")
    responses.get(URL + "/api/ApplicationService/Info", json={"Version": "4.1.0"})
    with client() as c:
        c.app_info()
    assert redact("debug: sent x-auth-tok-77 to OME") == "debug: sent *** to OME"
