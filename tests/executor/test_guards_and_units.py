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


def _user_jwt(backend) -> str:
    email = f"user-{uuid.uuid4().hex[:8]}@example.test"
    backend.create_user(email, "User-pw-123!", role="admin")
    resp = requests.post(
        f"{backend.url}/auth/v1/token?grant_type=password",
        json={"email": email, "password": "User-pw-123!"},
        headers={"apikey": backend.anon_key},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def test_executor_functions_are_for_the_service_role_only(clean_backend):
    """Neither the anon key nor a signed-in user's JWT (even an admin's) may call them."""
    jid = insert_jobs(clean_backend, LIGHT_TYPE)[0]
    jwt = _user_jwt(clean_backend)
    for name, bearer in (("anon", clean_backend.anon_key), ("user JWT", jwt)):
        resp = requests.post(
            f"{clean_backend.url}/rest/v1/rpc/executor_claim_jobs",
            json={"p_executor_id": "x", "p_job_types": [LIGHT_TYPE], "p_limit": 1, "p_lease_seconds": 5},
            headers={"apikey": clean_backend.anon_key, "Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
        assert resp.status_code in (401, 403), (name, resp.text)
        resp = requests.post(
            f"{clean_backend.url}/rest/v1/rpc/executor_heartbeat",
            json={"p_row": {"executor_id": "evil"}},
            headers={"apikey": clean_backend.anon_key, "Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
        assert resp.status_code in (401, 403), (name, resp.text)
    assert job(clean_backend, jid)["status"] == "pending"
    assert not clean_backend.sql("SELECT 1 FROM executor_heartbeats WHERE executor_id = 'evil'")


def test_stale_rescue_spares_live_leases_even_of_the_same_executor_id(clean_backend, store):
    insert_jobs(clean_backend, LIGHT_TYPE, 3)
    a, b, c = store.claim([LIGHT_TYPE], 3)
    clean_backend.sql(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = ANY(%s::uuid[])",
        ([a["id"], c["id"]],),
    )
    # start-up of another process with the SAME executor id: only the expired own jobs
    twin = JobStore(store.rest, "guard-ex", lease_seconds=30)
    got = twin.fail_stale(own_only=True)
    assert sorted(str(r["job_id"]) for r in got) == sorted([a["id"], c["id"]])
    assert job(clean_backend, b["id"])["status"] == "running", "a live lease of the same id is spared"
    assert "restarted" in job(clean_backend, a["id"])["details"]["error"]
    other = JobStore(store.rest, "other-ex", lease_seconds=30)
    assert other.fail_stale(own_only=True) == []
    clean_backend.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (b["id"],))
    assert other.fail_stale(own_only=True) == [], "own-only never touches another executor's jobs"
    assert [str(r["job_id"]) for r in other.fail_stale(own_only=False)] == [b["id"]]


def test_heartbeat_uses_the_database_clock_and_reports_a_twin(clean_backend, store):
    clean_backend.sql("SET TIME ZONE 'UTC'")
    row = {
        "executor_id": "guard-ex",
        "hostname": "h",
        "capabilities": [LIGHT_TYPE],
        "startup_time": "2001-01-01T00:00:00+00:00",
        "last_seen_at": "2001-01-01T00:00:00+00:00",  # a host clock far off: ignored
        "poll_count": 1,
    }
    assert store.heartbeat(row) is None
    beat = clean_backend.sql(
        "SELECT abs(extract(epoch FROM now() - last_seen_at)) AS age, capabilities FROM executor_heartbeats "
        "WHERE executor_id = 'guard-ex'"
    )[0]
    assert beat["age"] < 3600 and beat["capabilities"] == [LIGHT_TYPE]
    assert store.heartbeat(row) is None, "the same process again: no twin"
    twin = store.heartbeat({**row, "startup_time": "2002-02-02T00:00:00+00:00"})
    assert twin is not None and twin.hostname == "h"
    clean_backend.sql("UPDATE executor_heartbeats SET last_seen_at = now() - interval '5 minutes'")
    assert store.heartbeat({**row, "startup_time": "2003-03-03T00:00:00+00:00"}) is None, "a dead twin"


def test_resent_batches_are_applied_once(clean_backend, store):
    insert_jobs(clean_backend, LIGHT_TYPE)
    [row] = store.claim([LIGHT_TYPE], 1)
    claim = Claim(row["id"], row["claim_token"])
    for _ in range(2):  # the second call is the re-send after an ambiguous failure
        assert store.update_job(claim, {"k": 1}, ["once"], seq=1)
    assert store.update_job(claim, None, ["twice-ok"], seq=2)
    for _ in range(2):
        tid = store.upsert_task(claim, server_id=None, task_id=None, status="running", log_text="t1\n", seq=1)
    store.upsert_task(claim, server_id=None, task_id=tid, log_text="t2\n", seq=2)
    d = job(clean_backend, row["id"])["details"]
    assert [x for x in d["console_log"] if not x.startswith("[")] == ["once", "twice-ok"]
    assert clean_backend.sql("SELECT log FROM job_tasks WHERE id = %s", (tid,))[0]["log"] == "t1\nt2\n"
    assert store.finish_job(claim, "completed", {"p": 1}, ["end"], seq=3) == "completed"
    assert store.finish_job(claim, "completed", {"p": 1}, ["end"], seq=3) == "completed", "re-sent finish"
    assert job(clean_backend, row["id"])["details"]["console_log"].count("end") == 1
    audit = [{"id": str(uuid.uuid4()), "job_id": row["id"], "command_type": "GET", "success": True}]
    store.insert_audit(audit)
    store.insert_audit(audit)
    assert (
        clean_backend.sql("SELECT count(*) AS n FROM idrac_commands WHERE job_id = %s", (row["id"],))[0]["n"]
        == 1
    )


def test_handlers_read_only_allowed_tables_and_columns(clean_backend, store):
    from lib.executor.store import HandlerStoreImpl

    clean_backend.sql("INSERT INTO activity_settings (encryption_key) VALUES ('c2VjcmV0')")
    clean_backend.sql(
        "INSERT INTO servers (ip_address, hostname, idrac_password_encrypted) VALUES ('10.1.1.1', 'h1', 'ENC')"
    )
    hs = HandlerStoreImpl(store.rest, store)
    rows = hs.select("servers", {"hostname": "eq.h1"})
    assert rows and rows[0]["ip_address"] == "10.1.1.1" and "idrac_password_encrypted" not in rows[0]
    assert hs.select("servers", {"ip_address": "eq.10.1.1.1", "select": "id"})[0].keys() == {"id"}
    for table, params in (
        ("activity_settings", {}),
        ("credential_sets", {}),
        ("jobs", {}),
        ("servers", {"select": "id,idrac_password_encrypted"}),
        ("servers", {"select": "*"}),
        ("servers", {"idrac_password_encrypted": "like.E*"}),
        ("servers", {"order": "idrac_password_encrypted.asc"}),
        ("vcenters", {"select": "password_encrypted"}),
    ):
        with pytest.raises(ValueError):
            hs.select(table, params)
    for table in (
        "jobs",
        "job_tasks",
        "credential_sets",
        "activity_settings",
        "idrac_commands",
        "api_tokens",
    ):
        with pytest.raises(ValueError):
            hs.insert(table, {"name": "x"})
    assert clean_backend.sql("SELECT count(*) AS n FROM credential_sets")[0]["n"] == 0


def test_migration_applies_twice_without_change(clean_backend):
    from tests.executor.test_check_and_leases import MIGRATION

    snapshot = """
      SELECT (SELECT string_agg(p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' ||
                                md5(pg_get_functiondef(p.oid)) || coalesce(array_to_string(p.proacl, ','), ''),
                                ';' ORDER BY p.proname, pg_get_function_identity_arguments(p.oid))
                FROM pg_proc p WHERE p.proname LIKE 'executor%%' AND p.pronamespace = 'public'::regnamespace) AS fns,
             (SELECT string_agg(table_name || '.' || column_name || ':' || data_type, ',' ORDER BY table_name, column_name)
                FROM information_schema.columns WHERE table_schema = 'public'
                 AND table_name IN ('jobs', 'job_tasks', 'executor_server_locks')) AS cols,
             (SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes
               WHERE schemaname = 'public' AND tablename = 'jobs') AS idx
    """
    clean_backend.sql(MIGRATION.read_text())
    before = clean_backend.sql(snapshot)[0]
    clean_backend.sql(MIGRATION.read_text())
    assert clean_backend.sql(snapshot)[0] == before
    assert "executor_heartbeat(" in before["fns"] and "p_seq bigint" in before["fns"]


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


def test_stuck_jobs_are_failed_in_parallel_under_one_deadline(monkeypatch):
    """Shutdown records the end of every stuck job at once: with one-by-one recording the barrier
    (all three writers inside finish together) could never be passed."""
    import threading
    from types import SimpleNamespace

    from lib.executor import daemon as daemon_mod

    barrier = threading.Barrier(3, timeout=60)
    finished: list[str] = []

    class Writer:
        def __init__(self, job_id: str) -> None:
            self.job_id = job_id

        def line(self, msg: str, level: str = "INFO") -> None:
            pass

        def finish(self, status, patch, *, give_up):
            barrier.wait()  # BrokenBarrierError if the three are not in here at the same time
            finished.append(self.job_id)

    runs = [
        SimpleNamespace(job_id=f"job-{i}", current_step="blocking call", ctx=None, writer=Writer(f"job-{i}"))
        for i in range(3)
    ]
    d = daemon_mod.Daemon.__new__(daemon_mod.Daemon)
    d.settings = SimpleNamespace(executor_id="ex")
    monkeypatch.setattr(daemon_mod, "FORCE_FAIL_SECONDS", 120.0)
    d._force_fail_all(runs)  # type: ignore[arg-type]
    assert sorted(finished) == ["job-0", "job-1", "job-2"]
