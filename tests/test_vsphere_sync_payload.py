"""The vcenter-sync wire shape (CONTRACT.md section 2), batching, and DSM sign-in (unit tests)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import responses

from lib.config import DsmSettings
from lib.dsm.auth import check_jwt, choose_auth, sign_in_with_password
from lib.errors import AuthError, ConfigError
from lib.http import TLSConfig
from lib.sync.delivery import deliver
from lib.sync.vcenter import BodyBuilder, VcenterSyncOptions, host_payload, judge_reply
from lib.vsphere import AboutInfo, ClusterInfo, DatacenterInfo, HostInfo, Inventory

ABOUT = AboutInfo(name="vCenter", api_type="VirtualCenter", version="8.0.2", build="1", instance_uuid=None)


def host(i: int, cluster: int | None, dc: int = 1, **kw: object) -> HostInfo:
    base = HostInfo(
        moref=f"host-{i}",
        name=f"esx{i}.lab",
        datacenter=f"DC{dc}",
        datacenter_moref=f"datacenter-{dc}",
        cluster=f"C{cluster}" if cluster is not None else None,
        cluster_moref=f"domain-c{cluster}" if cluster is not None else None,
        serial_number=f"TAG{i:04d}",
        vendor="Dell Inc.",
        model="PowerEdge R750",
        esxi_version="8.0.2",
        esxi_build="22380479",
        connection_state="notResponding",
        power_state="poweredOn",
        maintenance_mode=False,
        cpu_sockets=2,
        cpu_cores=32,
        cpu_threads=64,
        cpu_model="Xeon",
        memory_bytes=768 * 2**30,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def cluster(n: int, dc: int = 1) -> ClusterInfo:
    return ClusterInfo(
        f"domain-c{n}", f"C{n}", f"DC{dc}", f"datacenter-{dc}", True, True, "fullyAutomated", 0, "green"
    )


def test_host_payload_has_the_contract_fields() -> None:
    p = host_payload(host(7, 1, maintenance_mode=True))
    assert {
        k: p[k] for k in ("name", "cluster", "vcenter_id", "serial_number", "esxi_version", "status")
    } == {
        "name": "esx7.lab",
        "cluster": "C1",  # the cluster NAME
        "vcenter_id": "host-7",  # the host's moref
        "serial_number": "TAG0007",
        "esxi_version": "8.0.2 22380479",
        "status": "notresponding",  # lower-cased connection state
    }
    assert p["maintenance_mode"] is True
    assert (p["cluster_id"], p["datacenter"], p["power_state"], p["memory_gb"]) == (
        "domain-c1",
        "DC1",
        "poweredOn",
        768,
    )
    standalone = host_payload(host(8, None, serial_number=None))
    assert standalone["cluster"] is None and standalone["serial_number"] is None


def test_batches_carry_their_clusters_and_datacenters_and_the_first_carries_all() -> None:
    hosts = tuple(
        [host(i, 1) for i in range(4)] + [host(10 + i, 2, dc=2) for i in range(3)] + [host(20, None)]
    )
    inv = Inventory(
        ABOUT,
        (
            DatacenterInfo("datacenter-1", "DC1"),
            DatacenterInfo("datacenter-2", "DC2"),
            DatacenterInfo("datacenter-3", "DC3"),
        ),
        (cluster(1), cluster(2, dc=2), cluster(3, dc=3)),  # C3 has no hosts
        hosts,
    )
    bodies: list[dict] = []
    build = BodyBuilder(inv, VcenterSyncOptions(vcenter_id="vc-uuid"))

    def send(batch: list[HostInfo]):
        bodies.append(json.loads(json.dumps(build(batch))))
        return judge_reply(
            {"success": True, "summary": {"total": len(batch), "new": len(batch), "updated": 0}}
        )

    result = deliver(hosts, send, batch_size=3, key=lambda h: h.moref)
    assert result.requests == 3 and result.sent == 8 and result.new == 8
    assert [len(b["hosts"]) for b in bodies] == [3, 3, 2]
    assert all(b["vcenter_id"] == "vc-uuid" for b in bodies)
    assert {c["name"] for c in bodies[0]["clusters"]} == {"C1", "C3"}
    assert {d["name"] for d in bodies[0]["datacenters"]} == {"DC1", "DC2", "DC3"}
    assert {c["name"] for c in bodies[1]["clusters"]} == {"C1", "C2"}
    assert {d["name"] for d in bodies[2]["datacenters"]} == {"DC1", "DC2"}
    sent = [h["vcenter_id"] for b in bodies for h in b["hosts"]]
    assert len(sent) == len(set(sent))
    assert not any("delete" in json.dumps(b).lower() for b in bodies)


def test_judge_reply() -> None:
    assert judge_reply({"success": False, "error": "db down"}).ok is False
    ok = judge_reply(
        {"success": True, "summary": {"new": 1, "updated": 2, "auto_linked": 3}, "errors": ["host-9: x"]}
    )
    assert (ok.ok, ok.new, ok.updated, ok.auto_linked, ok.item_errors) == (True, 1, 2, 3, ["host-9: x"])


URL = "http://127.0.0.1:9"


def dsm(**kw: object) -> DsmSettings:
    base = DsmSettings(
        URL,
        "anon-key",
        None,
        None,
        None,
        "ops@example.com",
        "s3cret-pw",
        None,
        None,
        TLSConfig(env_prefix="SUPABASE"),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@responses.activate
def test_sign_in_posts_the_password_grant_and_returns_the_token() -> None:
    responses.post(f"{URL}/auth/v1/token", json={"access_token": "jwt-abc", "token_type": "bearer"})
    assert sign_in_with_password(dsm()) == "jwt-abc"
    call = responses.calls[0]
    assert "grant_type=password" in call.request.url
    assert json.loads(call.request.body) == {"email": "ops@example.com", "password": "s3cret-pw"}
    assert call.request.headers["apikey"] == "anon-key"


@responses.activate
def test_wrong_dsm_password_names_the_variables_and_hides_the_password() -> None:
    responses.post(
        f"{URL}/auth/v1/token",
        status=400,
        json={"error": "invalid_grant", "error_description": "Invalid login credentials"},
    )
    with pytest.raises(AuthError) as err:
        choose_auth(
            dsm(executor_secret="also-set"), "vcenter-sync"
        )  # explicit credentials win, and fail loudly
    text = err.value.message + err.value.hint
    assert "DSM_EMAIL" in text and "DSM_PASSWORD" in text and "Invalid login credentials" in text
    assert "s3cret-pw" not in text


@responses.activate
def test_expired_jwt_fails_before_anything_else() -> None:
    responses.get(f"{URL}/auth/v1/user", status=401, json={"msg": "token is expired"})
    with pytest.raises(AuthError) as err:
        choose_auth(dsm(email=None, password=None, jwt="old.jwt.token"), "vcenter-sync")
    assert "DSM_JWT_TOKEN" in err.value.message and "expired" in err.value.message


@responses.activate
def test_valid_jwt_is_used_as_is() -> None:
    responses.get(f"{URL}/auth/v1/user", json={"email": "ops@example.com"})
    assert check_jwt(dsm(), "good.jwt") == "ops@example.com"
    auth = choose_auth(dsm(email=None, password=None, jwt="good.jwt"), "vcenter-sync")
    assert (auth.mode, auth.jwt) == ("jwt", "good.jwt")


def test_hmac_and_missing_credentials() -> None:
    assert choose_auth(dsm(email=None, password=None, executor_secret="k"), "vcenter-sync").mode == "hmac"
    with pytest.raises(ConfigError, match="DSM_API_TOKEN"):
        choose_auth(dsm(email=None, password=None, api_token="t"), "vcenter-sync")
    with pytest.raises(ConfigError):
        choose_auth(dsm(email=None, password=None), "vcenter-sync")


@responses.activate
def test_one_auth_choice_for_both_syncs() -> None:
    """lib.dsm.auth.choose_auth serves both functions with what each accepts (CONTRACT.md 1, 2, 6)."""
    responses.post(f"{URL}/auth/v1/token", json={"access_token": "jwt-fresh"})
    both = dsm(api_token="tok", executor_secret="k")
    assert choose_auth(both, "openmanage-sync").mode == "api_token"  # the API token first
    vc = choose_auth(both, "vcenter-sync")  # vcenter-sync takes no API token: signs in
    assert (vc.mode, vc.jwt, vc.described) == ("jwt", "jwt-fresh", "signed in as ops@example.com")
    ome = choose_auth(dsm(), "openmanage-sync")
    assert (ome.mode, ome.jwt) == ("jwt", "jwt-fresh")
    with pytest.raises(ConfigError, match="openmanage-sync does not accept EXECUTOR_SHARED_SECRET"):
        choose_auth(dsm(email=None, password=None, executor_secret="k"), "openmanage-sync")
    with pytest.raises(ConfigError, match="DSM_PASSWORD must be set"):
        choose_auth(dsm(password=None, jwt="also.set"), "openmanage-sync")  # half a pair is not skipped


def test_one_place_derives_the_backend_url() -> None:
    from lib.dsm.auth import _auth_url
    from lib.dsm.edge import EdgeClient, functions_base

    only_edge = dsm(
        supabase_url=None, edge_function_url="https://ref.example.co/functions/v1/openmanage-sync"
    )
    assert only_edge.backend_url("auth/v1") == "https://ref.example.co/auth/v1"
    assert _auth_url(only_edge) == "https://ref.example.co/auth/v1"
    assert functions_base(only_edge) == "https://ref.example.co/functions/v1"
    edge = EdgeClient(replace(only_edge, api_token="t"))
    assert edge.url_for("vcenter-sync") == "https://ref.example.co/functions/v1/vcenter-sync"
    assert dsm(supabase_url=URL + "/").backend_url("/functions/v1") == f"{URL}/functions/v1"
    with pytest.raises(ConfigError, match="SUPABASE_URL is required to sign in"):
        _auth_url(dsm(supabase_url=None, edge_function_url="https://x.example/custom"))
