"""The token guards of 0002_executor.sql over PostgREST, privileges, systemd notify, the REST client."""

from __future__ import annotations

import socket
import uuid

import pytest
import requests
import responses

from lib.dsm.rest import PostgrestError, RestClient
from lib.errors import AuthError, ConnectivityError
from lib.executor.notify import SystemdNotifier
from lib.executor.store import Claim, JobStore
from tests.executor.helpers import insert_jobs, job
from tests.executor.lab_handlers import LIGHT_TYPE


@pytest.fixture
def store(clean_backend):
    rest = RestClient(clean_backend.url, clean_backend.service_role_key)
    yield JobStore(rest, "guard-ex", lease_seconds=30)
    rest.close()


def test_guarded_writes_never_touch_a_cancelled_taken_over_or_terminal_job(clean_backend, store):
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    [row] = store.claim([LIGHT_TYPE], 5)
    claim = Claim(row["id"], row["claim_token"])
    assert store.claim([LIGHT_TYPE], 5) == [], "a claimed job is not claimed again"
    assert store.update_job(claim, {"current_step": "one"}, ["line 1"])
    wrong = Claim(jid, str(uuid.uuid4()))
    assert not store.update_job(wrong, {"current_step": "hijack"}, ["evil"])
    assert store.finish_job(wrong, "completed", None, []) is None

    clean_backend.sql("UPDATE jobs SET status = 'cancelled' WHERE id = %s", (jid,))
    assert not store.update_job(claim, {"progress_percent": 99}, [])
    assert store.update_job(claim, {"cancelled_step": "one"}, ["cleanup"], allow_cancelled=True)
    assert store.finish_job(claim, "completed", {"x": 1}, []) == "cancelled", "cancelled stays cancelled"
    assert store.finish_job(claim, "failed", {"y": 1}, []) is None, "annotated once, then never again"
    d = job(clean_backend, jid)
    assert d["status"] == "cancelled" and d["details"]["cancelled_step"] == "one" and "y" not in d["details"]

    jid2 = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    [row2] = store.claim([LIGHT_TYPE], 1)
    c2 = Claim(row2["id"], row2["claim_token"])
    assert store.finish_job(c2, "completed", {"progress_percent": 100}, ["done"]) == "completed"
    assert store.finish_job(c2, "failed", {"error": "late"}, []) is None
    assert not store.update_job(c2, {"error": "late"}, ["late"])
    assert store.upsert_task(c2, server_id=None, task_id=None, status="running") is None
    assert job(clean_backend, jid2)["status"] == "completed"
    assert "error" not in job(clean_backend, jid2)["details"]


def test_console_log_is_bounded_and_appends_are_atomic(clean_backend, store):
    from concurrent.futures import ThreadPoolExecutor

    insert_jobs(clean_backend, LIGHT_TYPE)
    [row] = store.claim([LIGHT_TYPE], 1)
    claim = Claim(row["id"], row["claim_token"])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.update_job(claim, {f"k{i}": i}, [f"line {i}"]), range(200)))
    d = job(clean_backend, row["id"])["details"]
    assert all(d[f"k{i}"] == i for i in range(200)), "no concurrent details key lost"
    assert sorted(x for x in d["console_log"] if x.startswith("line ")) == sorted(
        f"line {i}" for i in range(200)
    )
    store.update_job(claim, None, [f"more {i}" for i in range(600)])
    d = job(clean_backend, row["id"])["details"]
    assert len(d["console_log"]) == 500 and d["console_log"][-1] == "more 599"


def test_executor_functions_are_for_the_service_role_only(clean_backend):
    for key in (clean_backend.anon_key,):
        resp = requests.post(
            f"{clean_backend.url}/rest/v1/rpc/executor_claim_jobs",
            json={"p_executor_id": "x", "p_job_types": [LIGHT_TYPE], "p_limit": 1, "p_lease_seconds": 5},
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert resp.status_code in (401, 403), resp.text


def test_stale_rescue_spares_live_leases(clean_backend, store):
    insert_jobs(clean_backend, LIGHT_TYPE, 2)
    a, b = store.claim([LIGHT_TYPE], 2)
    clean_backend.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (a["id"],))
    other = JobStore(store.rest, "other-ex", lease_seconds=30)
    failed = other.fail_stale(own_only=False)
    assert [str(r["job_id"]) for r in failed] == [a["id"]]
    assert job(clean_backend, b["id"])["status"] == "running"
    assert other.fail_stale(own_only=True) == [], "own-only never touches another executor's jobs"


def test_systemd_notify_datagrams(tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(5)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.watchdog_interval == 1.0
        n.ready("serving")
        n.ready("again")  # READY=1 only once
        n.watchdog()
        n.stopping()
        got = [srv.recv(4096).decode() for _ in range(3)]
        assert got == ["READY=1\nSTATUS=serving", "WATCHDOG=1", "STOPPING=1"]
    finally:
        srv.close()
    assert SystemdNotifier({}).send("READY=1") is False  # no socket: a no-op


@responses.activate
def test_rest_client_headers_and_error_mapping():
    rest = RestClient("http://127.0.0.1:9", "svc-key-123")
    responses.get("http://127.0.0.1:9/rest/v1/jobs", json=[{"id": 1}])
    assert rest.select("jobs", {"status": "eq.pending"}) == [{"id": 1}]
    sent = responses.calls[0].request
    assert sent.headers["apikey"] == "svc-key-123" and sent.headers["Authorization"] == "Bearer svc-key-123"
    assert "status=eq.pending" in sent.url
    responses.post(
        "http://127.0.0.1:9/rest/v1/rpc/executor_schema_version",
        status=404,
        json={"code": "PGRST202", "message": "Could not find the function", "details": None, "hint": None},
    )
    with pytest.raises(PostgrestError) as err:
        rest.rpc("executor_schema_version")
    assert err.value.schema_missing and "migrations" in err.value.hint
    responses.post("http://127.0.0.1:9/rest/v1/rpc/x", status=401, json={"message": "JWT invalid"})
    with pytest.raises(AuthError) as aerr:
        rest.rpc("x")
    assert "SUPABASE_SERVICE_ROLE_KEY" in aerr.value.hint and "svc-key-123" not in str(aerr.value)


def test_rest_client_unreachable_is_a_connectivity_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = RestClient(f"http://127.0.0.1:{port}", "k")
    with pytest.raises(ConnectivityError):
        rest.rpc("executor_schema_version")
