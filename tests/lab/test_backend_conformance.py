"""Conformance with the official clients: supabase-py (postgrest-py) and requests.

Checks what a real Supabase answers: row shapes, Content-Range, status codes, error JSON,
embedding, logic trees, JSON paths, Range, object+json, RPC over POST and GET.
"""

from __future__ import annotations

import pytest
import requests
from postgrest.exceptions import APIError

from lab.backend.launcher import BackendProcess
from supabase import Client, create_client


@pytest.fixture
def sb(clean_backend: BackendProcess) -> Client:
    return create_client(clean_backend.url, clean_backend.service_role_key)


def _seed(b: BackendProcess) -> dict[str, str]:
    s1 = b.sql(
        "INSERT INTO servers (ip_address, service_tag, hostname) VALUES ('10.9.0.1', 'A1', 'alpha') "
        "RETURNING id::text"
    )[0]["id"]
    s2 = b.sql(
        "INSERT INTO servers (ip_address, service_tag, hostname) VALUES ('10.9.0.2', 'B2', 'beta') "
        "RETURNING id::text"
    )[0]["id"]
    job = b.sql(
        "INSERT INTO jobs (job_type, status, details) VALUES ('power_action', 'pending', "
        '\'{"action": "On", "progress_percent": 10}\') RETURNING id::text'
    )[0]["id"]
    b.sql(
        "INSERT INTO job_tasks (job_id, server_id, status) VALUES (%s, %s, 'pending'), (%s, %s, 'running')",
        [job, s1, job, s2],
    )
    return {"s1": s1, "s2": s2, "job": job}


def test_supabase_py_crud(sb: Client, clean_backend: BackendProcess) -> None:
    ins = sb.table("servers").insert({"ip_address": "10.8.0.1", "service_tag": "T1"}).execute()
    assert len(ins.data) == 1 and ins.data[0]["service_tag"] == "T1" and ins.data[0]["id"]
    sb.table("servers").insert(
        [{"ip_address": "10.8.0.2", "service_tag": "T2"}, {"ip_address": "10.8.0.3"}]
    ).execute()  # columns= with differing keys
    res = sb.table("servers").select("service_tag", count="exact").order("ip_address").execute()
    assert [r["service_tag"] for r in res.data] == ["T1", "T2", None] and res.count == 3
    up = (
        sb.table("servers")
        .upsert({"ip_address": "10.8.0.9", "service_tag": "T1", "hostname": "h"}, on_conflict="service_tag")
        .execute()
    )
    assert up.data[0]["ip_address"] == "10.8.0.9" and up.data[0]["hostname"] == "h"
    upd = sb.table("servers").update({"hostname": "x"}).eq("service_tag", "T2").execute()
    assert [r["hostname"] for r in upd.data] == ["x"]
    none = sb.table("servers").update({"hostname": "y"}).eq("service_tag", "nope").execute()
    assert none.data == []
    dele = sb.table("servers").delete().is_("service_tag", "null").execute()
    assert len(dele.data) == 1
    assert clean_backend.sql("SELECT count(*) AS n FROM servers")[0]["n"] == 2


def test_supabase_py_filters_single_and_errors(sb: Client, clean_backend: BackendProcess) -> None:
    ids = _seed(clean_backend)
    one = sb.table("jobs").select("id,status").eq("id", ids["job"]).single().execute()
    assert one.data == {"id": ids["job"], "status": "pending"}
    maybe = sb.table("jobs").select("id").eq("status", "failed").maybe_single().execute()
    assert maybe is None or maybe.data is None
    with pytest.raises(APIError) as info:
        sb.table("jobs").select("id").eq("status", "failed").single().execute()
    assert info.value.code == "PGRST116"
    with pytest.raises(APIError) as info:
        sb.table("servers").insert({"ip_address": "10.9.0.1"}).execute()
    assert info.value.code == "23505"
    r = (
        sb.table("servers")
        .select("hostname")
        .or_("service_tag.eq.A1,hostname.eq.beta")
        .order("hostname")
        .execute()
    )
    assert [x["hostname"] for x in r.data] == ["alpha", "beta"]
    r = sb.table("servers").select("hostname").in_("service_tag", ["B2", "zz"]).execute()
    assert r.data == [{"hostname": "beta"}]
    r = sb.table("servers").select("hostname").ilike("hostname", "AL%").execute()
    assert r.data == [{"hostname": "alpha"}]
    r = sb.table("jobs").select("details->>action").eq("details->>action", "On").execute()
    assert r.data == [{"action": "On"}]
    r = sb.table("jobs").select("id").contains("details", {"action": "On"}).execute()
    assert len(r.data) == 1
    r = sb.table("servers").select("hostname").order("hostname", desc=True).limit(1).execute()
    assert r.data == [{"hostname": "beta"}]
    r = sb.table("servers").select("hostname").range(1, 1).order("hostname").execute()
    assert r.data == [{"hostname": "beta"}]


def test_supabase_py_rpc(sb: Client, clean_backend: BackendProcess) -> None:
    ids = _seed(clean_backend)
    sb.rpc("append_job_console_log", {"p_job_id": ids["job"], "p_log_entry": "[00:00:00] [INFO] x"}).execute()
    details = clean_backend.sql("SELECT details FROM jobs")[0]["details"]
    assert details["console_log"] == ["[00:00:00] [INFO] x"] and details["action"] == "On"
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes
    enc = sb.rpc("encrypt_password", {"password": "pw", "key": key}).execute().data
    assert isinstance(enc, str)
    assert sb.rpc("decrypt_password", {"encrypted": enc, "key": key}).execute().data == "pw"
    anon = create_client(clean_backend.url, clean_backend.anon_key)
    with pytest.raises(APIError) as info:
        anon.rpc("decrypt_password", {"encrypted": enc, "key": key}).execute()
    assert info.value.code == "42501"


def test_embedding(clean_backend: BackendProcess) -> None:
    b = clean_backend
    ids = _seed(b)
    h = b.headers()
    r = requests.get(
        f"{b.url}/rest/v1/jobs?select=id,job_tasks(status,servers(hostname))&job_tasks.order=status.asc",
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.json() == [
        {
            "id": ids["job"],
            "job_tasks": [
                {"status": "pending", "servers": {"hostname": "alpha"}},
                {"status": "running", "servers": {"hostname": "beta"}},
            ],
        }
    ]
    r = requests.get(f"{b.url}/rest/v1/job_tasks?select=status,job:jobs(job_type)&order=status", headers=h)
    assert r.json()[0] == {"status": "pending", "job": {"job_type": "power_action"}}
    r = requests.get(
        f"{b.url}/rest/v1/job_tasks?select=status,servers!inner(hostname)&servers.hostname=eq.beta", headers=h
    )
    assert r.json() == [{"status": "running", "servers": {"hostname": "beta"}}]
    # servers has two FKs to credential_sets: ambiguous without a hint (PostgREST 300 PGRST201)
    r = requests.get(f"{b.url}/rest/v1/servers?select=id,credential_sets(name)", headers=h)
    assert r.status_code == 300 and r.json()["code"] == "PGRST201"
    r = requests.get(f"{b.url}/rest/v1/servers?select=id,credential_sets!credential_set_id(name)", headers=h)
    assert r.status_code == 200 and r.json()[0]["credential_sets"] is None
    r = requests.get(f"{b.url}/rest/v1/servers?select=id,nothing(*)", headers=h)
    assert r.status_code == 400 and r.json()["code"] == "PGRST200"


def test_logic_trees_and_json_paths(clean_backend: BackendProcess) -> None:
    b = clean_backend
    _seed(b)
    h = b.headers()
    url = f"{b.url}/rest/v1/servers?select=hostname&order=hostname"
    r = requests.get(url + "&or=(hostname.eq.alpha,and(service_tag.eq.B2,ip_address.like.10.9.*))", headers=h)
    assert [x["hostname"] for x in r.json()] == ["alpha", "beta"]
    r = requests.get(url + "&not.or=(hostname.eq.alpha,hostname.eq.gamma)", headers=h)
    assert [x["hostname"] for x in r.json()] == ["beta"]
    r = requests.get(url + "&hostname=not.in.(alpha)", headers=h)
    assert [x["hostname"] for x in r.json()] == ["beta"]
    r = requests.get(
        f"{b.url}/rest/v1/jobs?select=pct:details->progress_percent&details->>action=eq.On", headers=h
    )
    assert r.json() == [{"pct": 10}]
    r = requests.get(f"{b.url}/rest/v1/jobs?select=id&details->progress_percent=gt.5", headers=h)
    assert len(r.json()) == 1
    r = requests.get(url + "&hostname=zz.alpha", headers=h)
    assert r.status_code == 400 and r.json()["code"] == "PGRST100"
    r = requests.get(f"{b.url}/rest/v1/servers?select=nope", headers=h)
    assert r.status_code == 400 and r.json()["code"] == "42703"


def test_range_count_and_nulls_order(clean_backend: BackendProcess) -> None:
    b = clean_backend
    _seed(b)
    b.sql("INSERT INTO servers (ip_address) VALUES ('10.9.0.3')")
    h = {**b.headers(), "Range-Unit": "items", "Range": "1-2", "Prefer": "count=exact"}
    r = requests.get(f"{b.url}/rest/v1/servers?select=hostname&order=hostname.asc.nullsfirst", headers=h)
    assert r.status_code == 206 and r.headers["Content-Range"] == "1-2/3"  # a part of 3 rows
    assert r.json() == [{"hostname": "alpha"}, {"hostname": "beta"}]
    h["Range"] = "0-0"
    r = requests.get(f"{b.url}/rest/v1/servers?select=hostname&order=hostname.desc.nullslast", headers=h)
    assert (
        r.status_code == 206 and r.json() == [{"hostname": "beta"}] and r.headers["Content-Range"] == "0-0/3"
    )
    r = requests.get(f"{b.url}/rest/v1/servers?offset=10", headers={**b.headers(), "Prefer": "count=exact"})
    assert r.status_code == 416 and r.json()["code"] == "PGRST103"
    r = requests.head(f"{b.url}/rest/v1/servers", headers={**b.headers(), "Prefer": "count=exact"})
    assert r.status_code == 200 and r.headers["Content-Range"].endswith("/3")


def test_object_json_writes_roll_back(clean_backend: BackendProcess) -> None:
    b = clean_backend
    _seed(b)
    h = {**b.headers(), "Accept": "application/vnd.pgrst.object+json", "Prefer": "return=representation"}
    r = requests.patch(
        f"{b.url}/rest/v1/servers?ip_address=like.10.9.*", json={"hostname": "many"}, headers=h
    )
    assert r.status_code == 406 and r.json()["code"] == "PGRST116"
    assert {x["hostname"] for x in b.sql("SELECT hostname FROM servers")} == {"alpha", "beta"}  # rolled back
    r = requests.patch(f"{b.url}/rest/v1/servers?service_tag=eq.A1", json={"hostname": "one"}, headers=h)
    assert r.status_code == 200 and r.json()["hostname"] == "one"
    assert r.headers["Content-Type"].startswith("application/vnd.pgrst.object+json")


def test_prefer_return_and_missing_default(clean_backend: BackendProcess) -> None:
    b = clean_backend
    h = b.headers()
    r = requests.post(f"{b.url}/rest/v1/jobs", json={"job_type": "health_check"}, headers=h)
    assert r.status_code == 201 and r.text == ""
    r = requests.post(
        f"{b.url}/rest/v1/jobs?columns=job_type,status",
        json=[{"job_type": "health_check"}],
        headers={**h, "Prefer": "return=representation"},
    )
    assert r.status_code == 400 and r.json()["code"] == "23502"  # missing key -> NULL, violates NOT NULL
    r = requests.post(
        f"{b.url}/rest/v1/jobs?columns=job_type,status",
        json=[{"job_type": "health_check"}],
        headers={**h, "Prefer": "return=representation,missing=default"},
    )
    assert r.status_code == 201 and r.json()[0]["status"] == "pending"
    r = requests.post(f"{b.url}/rest/v1/jobs", json={"job_type": "health_check", "bogus": 1}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "PGRST204"
    r = requests.patch(
        f"{b.url}/rest/v1/jobs?status=eq.pending",
        json={"notes": "n"},
        headers={**h, "Prefer": "return=minimal,count=exact"},
    )
    assert r.status_code == 204 and r.headers["Content-Range"] == "0-1/2"
    r = requests.delete(
        f"{b.url}/rest/v1/jobs?status=eq.pending", headers={**h, "Prefer": "return=representation"}
    )
    assert r.status_code == 200 and len(r.json()) == 2


def test_rpc_get_and_setof(clean_backend: BackendProcess) -> None:
    b = clean_backend
    b.sql(
        "CREATE OR REPLACE FUNCTION lab_test_jobs(p_status text) RETURNS SETOF jobs LANGUAGE sql STABLE "
        "AS $$ SELECT * FROM jobs WHERE status::text = p_status ORDER BY created_at $$"
    )
    b.sql(
        "CREATE OR REPLACE FUNCTION lab_test_add(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE "
        "AS $$ SELECT a + b $$"
    )
    b.sql("INSERT INTO jobs (job_type, status) VALUES ('health_check', 'pending'), ('scp_export', 'running')")
    h = b.headers()
    r = requests.get(f"{b.url}/rest/v1/rpc/lab_test_add?a=2", headers=h)
    assert r.status_code == 200 and r.json() == 3
    r = requests.post(f"{b.url}/rest/v1/rpc/lab_test_add", json={"a": 2, "b": 5}, headers=h)
    assert r.json() == 7
    r = requests.get(f"{b.url}/rest/v1/rpc/lab_test_jobs?p_status=running&select=job_type", headers=h)
    assert r.status_code == 200 and r.json() == [{"job_type": "scp_export"}]
    r = requests.post(
        f"{b.url}/rest/v1/rpc/lab_test_jobs?select=job_type&job_type=eq.health_check",
        json={"p_status": "pending"},
        headers=h,
    )
    assert r.json() == [{"job_type": "health_check"}]
    r = requests.post(f"{b.url}/rest/v1/rpc/lab_test_add", json={"zzz": 1}, headers=h)
    assert r.status_code == 404 and r.json()["code"] == "PGRST202"
