"""PostgREST behaviour of the lab backend, driven with plain requests (as our code uses it)."""

from __future__ import annotations

import threading
import time

import psycopg
import requests

from lab.backend.launcher import BackendProcess


def rest(b: BackendProcess, path: str) -> str:
    return f"{b.url}/rest/v1/{path}"


def _servers(b: BackendProcess, n: int = 3) -> list[dict]:
    rows = [{"ip_address": f"10.0.0.{i}", "service_tag": f"TAG{i}", "cpu_count": i} for i in range(1, n + 1)]
    r = requests.post(
        rest(b, "servers"), json=rows, headers={**b.headers(), "Prefer": "return=representation"}
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_insert_select_filters_order_limit(clean_backend: BackendProcess) -> None:
    b = clean_backend
    rows = _servers(b, 5)
    assert {r["service_tag"] for r in rows} == {f"TAG{i}" for i in range(1, 6)}
    r = requests.get(
        rest(b, "servers?select=tag:service_tag,cpu_count&cpu_count=gte.2&order=cpu_count.desc&limit=2"),
        headers={**b.headers(), "Prefer": "count=exact"},
    )
    assert r.status_code == 206  # a subset of the 4 matching rows
    assert r.json() == [{"tag": "TAG5", "cpu_count": 5}, {"tag": "TAG4", "cpu_count": 4}]
    assert r.headers["Content-Range"] == "0-1/4"
    r = requests.get(
        rest(b, "servers?select=service_tag&service_tag=in.(TAG1,TAG3)&order=service_tag"),
        headers=b.headers(),
    )
    assert r.status_code == 200
    assert r.json() == [{"service_tag": "TAG1"}, {"service_tag": "TAG3"}]
    assert r.headers["Content-Range"] == "0-1/*"
    r = requests.get(
        rest(b, "servers?select=id&hostname=is.null&service_tag=not.like.*1"), headers=b.headers()
    )
    assert len(r.json()) == 4


def test_filtered_patch_race_exactly_one_winner(clean_backend: BackendProcess) -> None:
    """Several clients PATCH pending -> running at the same moment: exactly one gets the row.

    The race is forced, not hoped for: a transaction holds the row lock while every client sends
    its PATCH; once PostgreSQL shows them all waiting on that lock, the lock is released and they
    compete. Results are collected and checked in the main thread (an assert in a thread is lost).
    """
    b = clean_backend
    job = b.sql("INSERT INTO jobs (job_type) VALUES ('power_action') RETURNING id::text")[0]["id"]
    contenders = 4
    barrier = threading.Barrier(contenders + 1, timeout=30)
    outcomes: list[object] = [None] * contenders

    def claim(i: int) -> None:
        with requests.Session() as s:
            try:
                barrier.wait()
                r = s.patch(
                    rest(b, f"jobs?id=eq.{job}&status=eq.pending"),
                    json={"status": "running"},
                    headers={**b.headers(), "Prefer": "return=representation"},
                    timeout=60,
                )
                outcomes[i] = (r.status_code, r.json())
            except Exception as exc:  # reported by the main thread
                outcomes[i] = exc

    threads = [threading.Thread(target=claim, args=(i,), daemon=True) for i in range(contenders)]
    with psycopg.connect(b.database_url) as holder:
        holder.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job,))
        for t in threads:
            t.start()
        barrier.wait()
        waiting, deadline = 0, time.monotonic() + 30
        while waiting < contenders and time.monotonic() < deadline:
            waiting = b.sql(
                "SELECT count(*)::int AS n FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )[0]["n"]
            time.sleep(0.05)
        holder.commit()  # release the row: the waiting PATCHes now race for it
    for t in threads:
        t.join(60)
    assert waiting == contenders, f"only {waiting} of {contenders} PATCHes reached the row lock"
    assert all(isinstance(o, tuple) and o[0] == 200 for o in outcomes), outcomes
    assert sorted(len(o[1]) for o in outcomes) == [0] * (contenders - 1) + [1]  # type: ignore[index]
    assert b.sql("SELECT status::text FROM jobs WHERE id = %s", (job,))[0]["status"] == "running"


def test_upsert_merge_and_ignore(clean_backend: BackendProcess) -> None:
    b = clean_backend
    _servers(b, 1)
    h = {**b.headers(), "Prefer": "resolution=merge-duplicates,return=representation"}
    r = requests.post(
        rest(b, "servers?on_conflict=service_tag"),
        json=[{"service_tag": "TAG1", "ip_address": "10.0.0.1", "hostname": "h1"}],
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert r.json()[0]["hostname"] == "h1"
    h["Prefer"] = "resolution=ignore-duplicates,return=representation"
    r = requests.post(
        rest(b, "servers?on_conflict=service_tag"),
        json=[{"service_tag": "TAG1", "ip_address": "10.0.0.1", "hostname": "zzz"}],
        headers=h,
    )
    assert r.status_code == 201 and r.json() == []
    assert b.sql("SELECT hostname FROM servers")[0]["hostname"] == "h1"


def test_errors_follow_postgrest(clean_backend: BackendProcess) -> None:
    b = clean_backend
    _servers(b, 1)
    r = requests.post(rest(b, "servers"), json={"ip_address": "10.0.0.1"}, headers=b.headers())
    assert r.status_code == 409
    assert r.json()["code"] == "23505" and set(r.json()) == {"code", "message", "details", "hint"}
    r = requests.post(rest(b, "servers"), json={"service_tag": "X"}, headers=b.headers())
    assert r.status_code == 400 and r.json()["code"] == "23502"
    r = requests.post(
        rest(b, "jobs"), json={"job_type": "power_action", "priority": "urgent"}, headers=b.headers()
    )
    assert r.status_code == 400 and r.json()["code"] == "23514"
    r = requests.get(rest(b, "no_such_table"), headers=b.headers())
    assert r.status_code == 404
    r = requests.get(rest(b, "jobs"), headers=b.headers(b.anon_key))
    assert r.status_code == 401 and r.json()["code"] == "42501"
    r = requests.get(rest(b, "jobs"))
    assert r.status_code == 401 and r.json()["message"] == "No API key found in request"
    r = requests.get(rest(b, "jobs"), headers={"apikey": "nope", "Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["message"] == "Invalid API key"
    r = requests.get(rest(b, "jobs"), headers={"apikey": b.anon_key, "Authorization": "Bearer a.b.c"})
    assert r.status_code == 401 and r.json()["code"] == "PGRST301"
    r = requests.patch(rest(b, "jobs"), json={"status": "failed"}, headers=b.headers())
    assert r.status_code == 400 and r.json()["code"] == "21000"  # pg-safeupdate, as on Supabase


def test_object_json_and_rpc(clean_backend: BackendProcess) -> None:
    b = clean_backend
    job = b.sql("INSERT INTO jobs (job_type) VALUES ('health_check') RETURNING id::text")[0]["id"]
    obj = {**b.headers(), "Accept": "application/vnd.pgrst.object+json"}
    r = requests.get(rest(b, f"jobs?id=eq.{job}&select=id,status"), headers=obj)
    assert r.status_code == 200 and r.json() == {"id": job, "status": "pending"}
    r = requests.get(rest(b, "jobs?status=eq.running"), headers=obj)
    assert r.status_code == 406 and r.json()["code"] == "PGRST116"
    r = requests.post(
        rest(b, "rpc/append_job_console_log"), json={"p_job_id": job, "p_log_entry": "a"}, headers=b.headers()
    )
    assert r.status_code in (200, 204)
    assert b.sql("SELECT details FROM jobs")[0]["details"] == {"console_log": ["a"]}
    r = requests.post(
        rest(b, "rpc/append_job_console_log"),
        json={"p_job_id": job, "p_log_entry": "a"},
        headers=b.headers(b.anon_key),
    )
    assert r.status_code == 401 and r.json()["code"] == "42501"
    r = requests.post(rest(b, "rpc/nope"), json={}, headers=b.headers())
    assert r.status_code == 404 and r.json()["code"] == "PGRST202"


def test_stop_start_keeps_port_and_keys(backend: BackendProcess) -> None:
    url, key = backend.url, backend.service_role_key
    backend.stop()
    try:
        requests.get(rest(backend, "jobs"), headers=backend.headers(), timeout=2)
        raise AssertionError("server still answering after stop()")
    except requests.ConnectionError:
        pass
    backend.start()
    assert backend.url == url and backend.service_role_key == key
    assert requests.get(rest(backend, "jobs?limit=1"), headers=backend.headers()).status_code == 200
