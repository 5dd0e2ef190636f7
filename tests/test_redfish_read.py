"""Parsing and paging of the Redfish read helpers (lib/redfish.py) and the result bound
(handlers/inventory.py fit), on recorded-shape payloads; one client against `responses`."""

from __future__ import annotations

import json

import responses

from handlers.inventory import fit
from lib.http import RetryPolicy
from lib.redfish import (
    RedfishClient,
    firmware_inventory,
    installed_members,
    is_secret_attribute,
    iter_collection,
    newest_first,
    parse_firmware_member,
    parse_log_entry,
)

BASE = "https://10.0.0.5"  # a string only: every call below is answered by `responses`
INV = "/redfish/v1/UpdateService/FirmwareInventory"


def test_firmware_member_from_dells_shape():
    body = {
        "@odata.id": f"{INV}/Installed-25227-7.00.00.171",
        "Id": "Installed-25227-7.00.00.171",
        "Name": "Integrated Dell Remote Access Controller",
        "Version": "7.00.00.171",
        "Updateable": True,
        "SoftwareId": "25227",
    }
    c = parse_firmware_member(body)
    assert (c.name, c.version, c.updateable, c.software_id) == (
        "Integrated Dell Remote Access Controller",
        "7.00.00.171",
        True,
        "25227",
    )
    bare = parse_firmware_member({"@odata.id": f"{INV}/BMC", "Version": 3, "Updateable": "yes"})
    assert (bare.id, bare.name, bare.version, bare.updateable, bare.software_id) == (
        "BMC",
        "BMC",
        "3",
        None,
        None,
    )


def test_installed_members_drop_dells_previous_and_available_images():
    links = [
        f"{INV}/Installed-159-1.13.2",
        f"{INV}/Previous-159-1.12.0",
        f"{INV}/Available-159-1.14.0",
        f"{INV}/Installed-104473-22.31.6__NIC.Embedded.1-1-1",
    ]
    assert installed_members(links) == [links[0], links[3]]
    other = [f"{INV}/BMC", f"{INV}/BIOS"]  # another vendor: no state prefix, everything is installed
    assert installed_members(other) == other


def test_secret_attributes_by_name_or_registry_type():
    assert is_secret_attribute("SysPassword") and is_secret_attribute("oldsetuppassword")
    assert is_secret_attribute("IscsiDev1Con1ChapSecret", frozenset({"IscsiDev1Con1ChapSecret"}))
    assert not is_secret_attribute("BootMode", frozenset({"IscsiDev1Con1ChapSecret"}))
    # fail closed when the registry could not be read: the name alone withholds secret-like ones
    for name in ("IscsiDev1Con1ChapSecret", "IscsiInitiatorChapName", "WifiPassphrase", "TpmPsk", "AesKey"):
        assert is_secret_attribute(name), name
    for name in ("BootMode", "SysProfile", "KeyboardLayout", "MemOpMode"):
        assert not is_secret_attribute(name), name


def _basic_client() -> RedfishClient:
    return RedfishClient(BASE, "root", "pw-unit", auth_mode="basic", busy_retry=RetryPolicy(attempts=1))


@responses.activate
def test_expanded_firmware_collection_keeps_only_installed_members():
    responses.add(
        responses.GET, BASE + "/redfish/v1/", json={"UpdateService": {"@odata.id": "/redfish/v1/U"}}
    )
    responses.add(responses.GET, BASE + "/redfish/v1/U", json={"FirmwareInventory": {"@odata.id": INV}})
    members = [
        {"@odata.id": f"{INV}/{state}-159-{v}", "Id": f"{state}-159-{v}", "Name": "BIOS", "Version": v}
        for state, v in (("Installed", "1.13.2"), ("Previous", "1.12.0"), ("Available", "1.14.0"))
    ]
    responses.add(responses.GET, BASE + INV, json={"Members": members})
    got = firmware_inventory(_basic_client())
    assert [(c.id, c.version) for c in got] == [("Installed-159-1.13.2", "1.13.2")]
    assert len(responses.calls) == 3  # no GET per member


@responses.activate
def test_iter_collection_stops_on_a_next_link_loop_and_at_the_page_cap():
    path = "/redfish/v1/Coll"
    for page, nxt in (("a", "b"), ("b", "a")):  # a -> b -> a: not a self-link, still a loop
        responses.add(
            responses.GET,
            BASE + path,
            json={"Members": [{"Id": page}], "Members@odata.nextLink": f"{path}?p={nxt}"},
            match=[responses.matchers.query_string_matcher(f"p={page}")],
        )
    got = [m["Id"] for m in iter_collection(_basic_client(), f"{path}?p=a", what="coll")]
    assert got == ["a", "b"] and len(responses.calls) == 2
    served = []

    def endless(request):  # every page links to a new URL: only the page cap ends the walk
        served.append(request.url)
        return (
            200,
            {},
            json.dumps({"Members": [{"Id": "x"}], "Members@odata.nextLink": f"/E?p={len(served)}"}),
        )

    responses.add_callback(responses.GET, BASE + "/E", callback=endless)
    pages = list(iter_collection(_basic_client(), "/E", what="endless", max_pages=3))
    assert len(pages) == 3 and len(served) == 3


def test_log_entry_fields_and_message_clipped():
    e = parse_log_entry(
        {
            "Id": "12",
            "Created": "2026-01-02T10:00:00-06:00",
            "Severity": "Critical",
            "Message": "m" * 2000,
            "MessageId": "IDRAC.2.9.PSU0003",
            "EntryType": "SEL",
        }
    )
    assert e["id"] == "12" and e["severity"] == "Critical" and e["message_id"] == "IDRAC.2.9.PSU0003"
    assert len(e["message"]) == 500


def test_newest_first_compares_times_across_offsets():
    entries = [
        {"id": "a", "created": "2026-01-02T10:00:00-06:00"},  # 16:00 UTC
        {"id": "b", "created": "2026-01-02T17:00:00+00:00"},
        {"id": "c", "created": "not a time"},
        {"id": "d", "created": "2026-01-02T15:30:00Z"},
    ]
    assert [e["id"] for e in newest_first(entries)] == ["b", "a", "d", "c"]


@responses.activate
def test_iter_collection_follows_next_links_and_stops_at_the_limit():
    path = "/redfish/v1/Managers/iDRAC.Embedded.1/LogServices/Sel/Entries"
    for skip in (0, 2, 4):
        body = {"Members": [{"Id": str(skip + 1)}, {"Id": str(skip + 2)}], "Members@odata.count": 6}
        if skip < 4:
            body["Members@odata.nextLink"] = f"{path}?$skip={skip + 2}"
        url = BASE + path + (f"?$skip={skip}" if skip else "")
        responses.add(
            responses.GET,
            url,
            json=body,
            match=[responses.matchers.query_string_matcher(f"$skip={skip}" if skip else "")],
        )
    client = RedfishClient(BASE, "root", "pw-unit", auth_mode="basic", busy_retry=RetryPolicy(attempts=1))
    got = [m["Id"] for m in iter_collection(client, path, what="entries", limit=5)]
    assert got == ["1", "2", "3", "4", "5"]
    assert len(responses.calls) == 3
    assert [m["Id"] for m in iter_collection(client, path, what="entries", limit=2)] == ["1", "2"]
    assert len(responses.calls) == 4  # the limit reached on the first page: no second page read


def test_fit_keeps_the_first_items_and_says_so():
    summary = {"server": "h1", "entries": [{"id": str(i), "message": "x" * 100} for i in range(1000)]}
    small = fit(summary, "entries", 10_000)
    assert len(json.dumps(small)) <= 10_000
    kept = small["truncated"]["kept"]
    assert 0 < kept < 1000 and small["entries"] == summary["entries"][:kept]
    assert small["truncated"]["total"] == 1000 and "limited to" in small["truncated"]["note"]
    assert fit(summary, "entries", 10_000_000) is summary  # fits: untouched, no note
    attrs = fit({"attributes": {f"A{i:04d}": "v" * 50 for i in range(500)}}, "attributes", 5_000)
    assert len(json.dumps(attrs)) <= 5_000 and next(iter(attrs["attributes"])) == "A0000"


def test_fit_stays_within_the_budget_when_the_other_fields_are_too_big():
    summary = {
        "server_id": "s1",
        "server": "h1",
        "withheld": [f"Name{i:05d}" * 5 for i in range(2000)],  # not the trimmed key
        "attributes": {f"A{i}": "v" for i in range(50)},
    }
    out = fit(summary, "attributes", 2_000)
    assert len(json.dumps(out)) <= 2_000
    assert out["server_id"] == "s1" and out["attributes"] == {} and out["truncated"]["total"] == 50
    assert "too large" in out["truncated"]["note"]
