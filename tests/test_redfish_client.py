"""Unit tests of lib/redfish.py against recorded-shape answers (responses, no network)."""

from __future__ import annotations

import datetime as dt
import email.utils
import json

import pytest
import responses

from lib.errors import AuthError, ConnectRefusedError, RemoteError
from lib.http import RetryPolicy
from lib.redfish import RedfishClient, retry_reason, split_address

BASE = "https://10.0.0.5"
FAST = RetryPolicy(attempts=4, max_seconds=30, backoff_base=0.01, backoff_max=0.02)
PASSWORD = "s3cret-Pw!"


def _root(**over):
    root = {
        "@odata.id": "/redfish/v1/",
        "RedfishVersion": "1.17.0",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "Managers": {"@odata.id": "/redfish/v1/Managers"},
        "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
        "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
        "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
    }
    root.update(over)
    return {k: v for k, v in root.items() if v is not None}


def _err(message_id, message="busy"):
    return {
        "error": {"@Message.ExtendedInfo": [{"MessageId": message_id, "Message": message, "Resolution": "r"}]}
    }


SYSTEM_ID = "/redfish/v1/Systems/4c4c4544-0042"  # not a Dell id: paths must be discovered


def _system(power="On", allowed=("On", "ForceOff", "GracefulShutdown")):
    return {
        "@odata.id": SYSTEM_ID,
        "PowerState": power,
        "Status": {"Health": "OK", "HealthRollup": "Warning"},
        "Links": {"Chassis": [{"@odata.id": "/redfish/v1/Chassis/1U"}]},
        "Storage": {"@odata.id": SYSTEM_ID + "/Storage"},
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": SYSTEM_ID + "/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": list(allowed),
            }
        },
    }


def _login_ok(rsps, token="tok-1", sid="77"):
    rsps.add(
        responses.POST,
        BASE + "/redfish/v1/SessionService/Sessions",
        status=201,
        json={"Id": sid},
        headers={"X-Auth-Token": token, "Location": f"/redfish/v1/SessionService/Sessions/{sid}"},
    )
    rsps.add(responses.DELETE, BASE + f"/redfish/v1/SessionService/Sessions/{sid}", status=200, json={})


def _client(calls=None, **kw):
    return RedfishClient(
        "10.0.0.5",
        "root",
        PASSWORD,
        audit=(calls.append if calls is not None else None),
        busy_retry=FAST,
        sleep=lambda s: None,
        **kw,
    )


@responses.activate
def test_session_login_uses_token_and_logs_out():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    responses.add(responses.GET, BASE + SYSTEM_ID, json=_system())
    calls = []
    with _client(calls) as bmc:
        assert bmc.power_state() == "On"
    login = responses.calls[1].request
    assert "Authorization" not in login.headers
    assert json.loads(login.body) == {"UserName": "root", "Password": PASSWORD}
    get_sys = responses.calls[3].request
    assert get_sys.headers["X-Auth-Token"] == "tok-1" and "Authorization" not in get_sys.headers
    assert responses.calls[-1].request.method == "DELETE"
    assert responses.calls[-1].request.headers["X-Auth-Token"] == "tok-1"
    assert [(c.method, c.path, c.status) for c in calls][-1] == (
        "DELETE",
        "/redfish/v1/SessionService/Sessions/77",
        200,
    )
    assert all(PASSWORD not in repr(c) and "tok-1" not in repr(c) for c in calls)


@responses.activate
def test_old_service_uses_redfish_v1_sessions():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root(RedfishVersion="1.4.0", Links={}))
    responses.add(
        responses.POST,
        BASE + "/redfish/v1/SessionService/Sessions",
        status=201,
        headers={"X-Auth-Token": "t"},
    )
    with _client():
        pass
    # SessionService present: it is used even without Links.Sessions
    assert responses.calls[1].request.url.endswith("/redfish/v1/SessionService/Sessions")

    responses.reset()
    responses.add(
        responses.GET,
        BASE + "/redfish/v1/",
        json=_root(RedfishVersion="1.4.0", Links={}, SessionService=None),
    )
    responses.add(responses.POST, BASE + "/redfish/v1/Sessions", status=201, headers={"X-Auth-Token": "t"})
    with _client():
        pass
    assert responses.calls[1].request.url.endswith("/redfish/v1/Sessions")


@responses.activate
def test_basic_fallback_on_405_and_without_session_service():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    responses.add(responses.POST, BASE + "/redfish/v1/SessionService/Sessions", status=405, json={})
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    with _client() as bmc:
        assert bmc.system_path() == SYSTEM_ID
    assert responses.calls[-1].request.headers["Authorization"].startswith("Basic ")
    assert not any(c.request.method == "DELETE" for c in responses.calls)


@responses.activate
def test_wrong_password_is_auth_error_with_bmc_message_and_no_secret():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    responses.add(
        responses.POST,
        BASE + "/redfish/v1/SessionService/Sessions",
        status=401,
        json=_err(
            "Base.1.12.AccessDenied",
            "The authentication credentials included with this request are missing or invalid.",
        ),
    )
    with pytest.raises(AuthError) as info, _client():
        pass
    assert "credentials included with this request are missing or invalid" in str(info.value)
    assert "password" in info.value.hint and PASSWORD not in str(info.value)
    assert sum(c.request.method == "POST" for c in responses.calls) == 1  # never retried


@responses.activate
def test_session_limit_retried_then_succeeds():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    busy = _err("IDRAC.2.9.RAC0218", "The maximum number of user sessions is reached.")
    responses.add(responses.POST, BASE + "/redfish/v1/SessionService/Sessions", status=503, json=busy)
    responses.add(responses.POST, BASE + "/redfish/v1/SessionService/Sessions", status=503, json=busy)
    _login_ok(responses)
    waits = []
    with RedfishClient("10.0.0.5", "root", PASSWORD, busy_retry=FAST, sleep=waits.append) as bmc:
        assert bmc.auth.token == "tok-1"
    assert len(waits) == 2


@responses.activate
@pytest.mark.parametrize("retry_after", ["seconds", "http-date"])
def test_busy_answer_honours_retry_after_in_both_forms(retry_after):
    """Retry-After is parsed by lib.http (delay-seconds or an HTTP-date), the same as every client."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12)
    value = "12" if retry_after == "seconds" else email.utils.format_datetime(when, usegmt=True)
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    busy = _err("IDRAC.2.9.SYS518")
    responses.add(
        responses.POST,
        BASE + "/redfish/v1/SessionService/Sessions",
        status=503,
        json=busy,
        headers={"Retry-After": value},
    )
    _login_ok(responses)
    waits = []
    with RedfishClient("10.0.0.5", "root", PASSWORD, busy_retry=FAST, sleep=waits.append) as bmc:
        assert bmc.auth.token == "tok-1"
    assert len(waits) == 1 and 9.0 <= waits[0] <= 12.0  # not the 0.02 s backoff of the policy


@responses.activate
def test_session_limit_exhausted_names_rac0218_with_hint():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    busy = _err("IDRAC.2.9.RAC0218", "The maximum number of user sessions is reached.")
    for _ in range(4):
        responses.add(responses.POST, BASE + "/redfish/v1/SessionService/Sessions", status=503, json=busy)
    with pytest.raises(RemoteError) as info, _client():
        pass
    assert info.value.code == "RAC0218" and "racadm closessn" in info.value.hint
    assert sum(c.request.method == "POST" for c in responses.calls) == FAST.attempts


@responses.activate
def test_reauth_once_on_401_after_bmc_dropped_session():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses, token="old", sid="1")
    responses.add(
        responses.GET, BASE + "/redfish/v1/Systems", status=401, json=_err("Base.1.12.AccessDenied")
    )
    _login_ok(responses, token="new", sid="2")
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    with _client() as bmc:
        assert bmc.system_path() == SYSTEM_ID
    gets = [c.request for c in responses.calls if c.request.url.endswith("/Systems")]
    assert [g.headers["X-Auth-Token"] for g in gets] == ["old", "new"]
    deletes = [c.request for c in responses.calls if c.request.method == "DELETE"]
    # the refused session is deleted (best effort, with its own token) before the new login
    assert [(d.url, d.headers["X-Auth-Token"]) for d in deletes] == [
        (BASE + "/redfish/v1/SessionService/Sessions/1", "old"),
        (BASE + "/redfish/v1/SessionService/Sessions/2", "new"),
    ]
    methods = [c.request.method for c in responses.calls]
    assert methods.index("DELETE") < len(methods) - 1 - methods[::-1].index("POST")


def test_reauth_on_401_leaves_no_session_open_on_the_bmc(idrac_sim):
    """A 401 while the session is still open (iDRAC under load): re-login must not leak it."""
    fleet = idrac_sim(1)
    bmc = fleet[0]
    url = "http://" + bmc.address  # the fleet serves plain HTTP on 127.0.0.1
    client = RedfishClient(url, bmc.username, bmc.password, busy_retry=FAST, sleep=lambda s: None)
    with client:
        bmc.inject("AUTH401", 1)
        assert client.system_path().startswith("/redfish/v1/Systems/")
        assert bmc.counters()["sessions_open"] == 1  # the old one was deleted before the new login
    stats = bmc.counters()
    assert stats["sessions_open"] == 0
    assert (stats["sessions_created"], stats["sessions_deleted"]) == (2, 2)


@responses.activate
@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example/redfish/v1/Systems?page=2",
        "http://10.0.0.5/redfish/v1/Systems?page=2",  # same host, other scheme
        "https://10.0.0.5:8443/redfish/v1/Systems?page=2",  # same host, other port
        "https://10.0.0.5:x/redfish/v1/Systems",
    ],
)
def test_a_link_leaving_the_bmc_is_refused_before_any_credential_is_sent(link):
    from lib.redfish import iter_collection

    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    page1 = {"Members": [{"@odata.id": SYSTEM_ID}], "Members@odata.nextLink": link}
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json=page1)
    calls = []
    with pytest.raises(RemoteError, match="leaves the BMC"), _client(calls) as bmc:
        list(iter_collection(bmc, "/redfish/v1/Systems", what="listing systems"))
    assert all(c.request.url.startswith(BASE + "/") for c in responses.calls)
    assert len([c for c in responses.calls if c.request.method == "GET"]) == 2  # root, page 1
    assert all(c.url.startswith(BASE + "/") for c in calls)


@responses.activate
def test_an_absolute_link_to_the_bmc_itself_is_followed_as_a_path():
    from lib.redfish import iter_collection

    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    page1 = {
        "Members": [{"@odata.id": "a"}],
        "Members@odata.nextLink": "HTTPS://10.0.0.5:443/redfish/v1/S?p=2",
    }
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json=page1)
    responses.add(
        responses.GET,
        BASE + "/redfish/v1/S",
        json={"Members": [{"@odata.id": "b"}]},
        match=[responses.matchers.query_string_matcher("p=2")],
    )
    with _client() as bmc:
        got = [m["@odata.id"] for m in iter_collection(bmc, "/redfish/v1/Systems", what="x")]
    assert got == ["a", "b"]


@responses.activate
def test_second_401_is_an_auth_error():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    responses.add(
        responses.GET, BASE + "/redfish/v1/Systems", status=401, json=_err("Base.1.12.AccessDenied")
    )
    with pytest.raises(AuthError), _client() as bmc:
        bmc.system_path()


@responses.activate
def test_sys518_get_retried_but_other_errors_raise_with_message():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", status=503, json=_err("IDRAC.2.9.SYS518"))
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", status=400, json=_err("IDRAC.2.9.SWC0700"))
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    responses.add(
        responses.GET, BASE + SYSTEM_ID, status=500, json=_err("IDRAC.2.9.SYS999", "Internal thing broke.")
    )
    calls = []
    with _client(calls) as bmc:
        assert bmc.system_path() == SYSTEM_ID
        with pytest.raises(RemoteError) as info:
            bmc.system()
    assert "Internal thing broke." in str(info.value) and info.value.code == "SYS999"
    statuses = [c.status for c in calls if c.path == "/redfish/v1/Systems"]
    assert statuses == [503, 400, 200]
    assert all(c.success == (c.status is not None and c.status < 400) for c in calls)


@responses.activate
def test_post_not_retried_on_plain_503_but_on_vendor_busy_code():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    responses.add(responses.GET, BASE + SYSTEM_ID, json=_system())
    target = BASE + SYSTEM_ID + "/Actions/ComputerSystem.Reset"
    responses.add(responses.POST, target, status=503, json=_err("IDRAC.2.9.SYS518"))
    responses.add(responses.POST, target, status=204)
    responses.add(responses.POST, target, status=503, json={"error": {"message": "gateway"}})
    with _client() as bmc:
        assert bmc.reset("ForceOff") is True
        with pytest.raises(RemoteError):
            bmc.reset("ForceOff")
    posts = [c for c in responses.calls if c.request.url == target]
    assert len(posts) == 3
    assert json.loads(posts[0].request.body) == {"ResetType": "ForceOff"}


@responses.activate
def test_reset_checks_allowable_values_and_reports_already_in_state():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    responses.add(responses.GET, BASE + SYSTEM_ID, json=_system())
    target = BASE + SYSTEM_ID + "/Actions/ComputerSystem.Reset"
    responses.add(
        responses.POST, target, status=409, json=_err("IDRAC.2.9.PSU501", "Server is already powered ON.")
    )
    with _client() as bmc:
        with pytest.raises(RemoteError) as info:
            bmc.reset("Nmi")
        assert "allowed: On, ForceOff, GracefulShutdown" in str(info.value)
        assert bmc.reset("On") is False


@responses.activate
def test_health_reads_subsystems_and_storage_and_lists_problems():
    responses.add(responses.GET, BASE + "/redfish/v1/", json=_root())
    _login_ok(responses)
    responses.add(responses.GET, BASE + "/redfish/v1/Systems", json={"Members": [{"@odata.id": SYSTEM_ID}]})
    responses.add(responses.GET, BASE + SYSTEM_ID, json=_system())
    responses.add(
        responses.GET,
        BASE + "/redfish/v1/Chassis/1U",
        json={"ThermalSubsystem": {"@odata.id": "/ts"}, "PowerSubsystem": {"@odata.id": "/ps"}},
    )
    responses.add(responses.GET, BASE + "/ts", json={"Fans": {"@odata.id": "/ts/Fans"}})
    responses.add(responses.GET, BASE + "/ts/Fans", json={"Members": [{"@odata.id": "/ts/Fans/1"}]})
    responses.add(
        responses.GET,
        BASE + "/ts/Fans/1",
        json={"Name": "Fan 1", "Status": {"Health": "Critical", "State": "Enabled"}},
    )
    responses.add(responses.GET, BASE + "/ps", json={"PowerSupplies": {"@odata.id": "/ps/PSU"}})
    responses.add(responses.GET, BASE + "/ps/PSU", json={"Members": [{"@odata.id": "/ps/PSU/1"}]})
    responses.add(
        responses.GET,
        BASE + "/ps/PSU/1",
        json={"Name": "PSU 1", "Status": {"Health": "OK", "State": "Enabled"}},
    )
    responses.add(responses.GET, BASE + SYSTEM_ID + "/Storage", json={"Members": [{"@odata.id": "/st/1"}]})
    responses.add(
        responses.GET,
        BASE + "/st/1",
        json={
            "Id": "RAID.1",
            "StorageControllers": [{"Name": "PERC", "Status": {"Health": "Warning", "State": "Enabled"}}],
        },
    )
    with _client() as bmc:
        report = bmc.health()
    assert [(c.kind, c.name, c.health) for c in report.problems] == [
        ("fan", "Fan 1", "Critical"),
        ("storage", "PERC", "Warning"),
    ]
    assert report.overall == "Critical" and report.power_state == "On"


@responses.activate
def test_connection_refused_is_typed_and_audited():
    calls = []
    with pytest.raises(ConnectRefusedError), _client(calls):
        pass
    assert calls and calls[0].status is None and not calls[0].success


def test_retry_predicate_and_addresses():
    assert retry_reason("POST", 503, "RAC0218", None)
    assert retry_reason("POST", 503, None, None) is None
    assert retry_reason("GET", 503, None, None)
    assert retry_reason("GET", 404, None, None) is None
    assert split_address("10.0.0.5:8443") == ("https", "10.0.0.5:8443")
    assert split_address("fe80::1") == ("https", "[fe80::1]")
    assert split_address("http://127.0.0.1:9000/") == ("http", "127.0.0.1:9000")
