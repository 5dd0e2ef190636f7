"""Targets in every target_scope shape, credential lookup order and decryption, per-server tasks,
and secrets kept out of every log and job field — against the lab backend."""

from __future__ import annotations

import base64
import json
import os

import pytest

from lib.dsm.credentials import CredentialResolver, decode_key, encrypt_password
from lib.dsm.rest import RestClient
from lib.errors import AuthError, ConfigError
from lib.executor.context import resolve_targets
from lib.executor.errors import InvalidJobInput
from lib.executor.models import Job, Server
from lib.executor.store import JobStore
from tests.executor.helpers import insert_jobs, job
from tests.executor.lab_handlers import SCRIPTED_TYPE, TARGETS_TYPE

KEY_B64 = base64.b64encode(os.urandom(32)).decode()
SECRET = "Sup3r-S3cret-Pw!x"


def _one(backend, sql: str, params=()) -> str:
    return str(backend.sql(sql, params)[0]["id"])


@pytest.fixture
def fleet(clean_backend):
    b = clean_backend
    key = decode_key(KEY_B64)
    b.sql("INSERT INTO activity_settings (encryption_key, idrac_max_concurrent) VALUES (%s, 2)", (KEY_B64,))
    cs = {}
    for name, user, pw, prio in (("set-a", "root-a", SECRET, 10), ("ranged", "root-r", "ranged-pw", 5)):
        cs[name] = _one(
            b,
            "INSERT INTO credential_sets (name, username, password_encrypted, priority) VALUES (%s,%s,%s,%s) RETURNING id",
            (name, user, encrypt_password(pw, key), prio),
        )
    cs["broken"] = _one(
        b,
        "INSERT INTO credential_sets (name, username, password_encrypted) VALUES ('broken','x',%s) RETURNING id",
        (base64.b64encode(b"0123456789abcdef").decode(),),
    )
    b.sql(
        "INSERT INTO credential_ip_ranges (credential_set_id, ip_range, priority) VALUES (%s, '10.9.1.0/24', 1)",
        (cs["ranged"],),
    )
    # an ESXi set whose range covers s4 with a better priority: never used for an iDRAC
    cs["esxi"] = _one(
        b,
        "INSERT INTO credential_sets (name, username, password_encrypted, credential_type, priority) "
        "VALUES ('esxi-set', 'esx-root', %s, 'esxi', 1) RETURNING id",
        (encrypt_password("esxi-pw", key),),
    )
    b.sql(
        "INSERT INTO credential_ip_ranges (credential_set_id, ip_range, priority) VALUES (%s, '10.9.1.0/25', 0)",
        (cs["esxi"],),
    )
    vc = _one(b, "INSERT INTO vcenters (name, host) VALUES ('vc1', 'vc.example') RETURNING id")
    cl = _one(
        b, "INSERT INTO vcenter_clusters (vcenter_id, cluster_name) VALUES (%s, 'Prod') RETURNING id", (vc,)
    )
    srv = {}
    rows = [
        ("s1", "10.9.0.1", {"credential_set_id": cs["set-a"]}),
        (
            "s2",
            "10.9.0.2:8443",
            {"idrac_username": "own", "idrac_password_encrypted": encrypt_password("own-pw", key)},
        ),
        ("s3", "10.9.0.3", {"discovered_by_credential_set_id": cs["set-a"]}),
        ("s4", "10.9.1.4", {}),
        ("s5", "10.9.2.5", {}),
        ("bad-6", "10.9.0.6", {"credential_set_id": cs["broken"]}),
    ]
    for host, ip, extra in rows:
        cols = ["hostname", "ip_address", *extra]
        srv[host] = _one(
            b,
            f"INSERT INTO servers ({','.join(cols)}) VALUES ({','.join(['%s'] * len(cols))}) RETURNING id",
            (host, ip, *extra.values()),
        )
    h1 = _one(
        b,
        "INSERT INTO vcenter_hosts (vcenter_id, source_vcenter_id, name, cluster, server_id) "
        "VALUES (%s, 'host-1', 'esx1', 'Prod', %s) RETURNING id",
        (vc, srv["s1"]),
    )
    _one(
        b,
        "INSERT INTO vcenter_hosts (vcenter_id, source_vcenter_id, name, cluster, server_id) "
        "VALUES (%s, 'host-2', 'esx2', 'Prod', %s) RETURNING id",
        (vc, srv["s2"]),
    )
    _one(
        b,
        "INSERT INTO vcenter_hosts (vcenter_id, source_vcenter_id, name, cluster) "
        "VALUES (%s, 'host-3', 'esx3-unlinked', 'Dev') RETURNING id",
        (vc,),
    )
    rest = RestClient(b.url, b.service_role_key)
    yield {"srv": srv, "cs": cs, "vc": vc, "cluster": cl, "host1": h1, "rest": rest, "backend": b}
    rest.close()


def _job(scope, details=None) -> Job:
    return Job.from_row(
        {
            "id": "00000000-0000-0000-0000-000000000001",
            "job_type": TARGETS_TYPE,
            "status": "running",
            "target_scope": scope,
            "details": details,
        }
    )


def test_every_target_scope_shape(fleet):
    s, store = fleet["srv"], JobStore(fleet["rest"], "t", lease_seconds=60)
    logs: list[str] = []

    def names(scope, details=None):
        return sorted(
            x.hostname for x in resolve_targets(_job(scope, details), store, lambda m, lvl: logs.append(m))
        )

    assert names({"type": "specific", "server_ids": [s["s1"], s["s2"]]}) == ["s1", "s2"]
    assert names({"server_ids": [s["s3"]]}) == ["s3"]
    assert names({"server_ids": f"{s['s1']},{s['s4']}"}) == ["s1", "s4"]  # comma-separated string
    assert names({"vcenter_host_ids": [fleet["host1"]]}) == ["s1"]
    assert names({"cluster_name": "Prod"}) == ["s1", "s2"]
    assert names({"cluster_id": fleet["cluster"]}) == ["s1", "s2"]
    assert names({"vcenter_ids": [fleet["vc"]]}) == ["s1", "s2"]
    assert any("esx3-unlinked" in m for m in logs), "an unlinked host is reported"
    assert names({"ip_range": "10.9.0.0/24"}) == ["bad-6", "s1", "s2", "s3"]  # s2 is host:port
    assert names({"ip_range": "10.9.0.2-10.9.1.4"}) == ["bad-6", "s2", "s3", "s4"]
    assert names({"ip_list": ["10.9.0.1", "10.9.2.5"]}) == ["s1", "s5"]
    assert names({"type": "all"}) == ["bad-6", "s1", "s2", "s3", "s4", "s5"]
    assert names({}, {"server_id": s["s5"]}) == ["s5"]
    missing = "00000000-0000-0000-0000-0000000000ff"
    assert names({"server_ids": [s["s1"], missing]}) == ["s1"]
    assert any(missing in m for m in logs), "an unknown id is reported"
    with pytest.raises(InvalidJobInput) as err:
        names({"ip_range": "not-a-range"})
    assert err.value.field == "target_scope.ip_range"
    with pytest.raises(InvalidJobInput) as err:
        names({"cluster_name": "Nope"})
    assert err.value.field == "target_scope"


def test_credential_lookup_order_and_errors(fleet):
    s = fleet["srv"]
    r = CredentialResolver(fleet["rest"], default_user="dflt", default_password="dflt-pw")
    by = {
        n: Server.from_row(row)
        for n, row in ((row["hostname"], row) for row in fleet["rest"].select("servers"))
    }
    assert (r.for_server(by["s1"]).username, r.for_server(by["s1"]).password) == ("root-a", SECRET)
    c2 = r.for_server(by["s2"])
    assert (c2.username, c2.password, c2.source) == ("own", "own-pw", "server")
    assert r.for_server(by["s3"]).username == "root-a"  # discovered_by set
    c4 = r.for_server(by["s4"])
    assert (c4.username, c4.password) == ("root-r", "ranged-pw")  # ip range (the esxi range skipped)
    assert r.for_server(by["s5"]).source == "executor default"
    assert SECRET not in repr(r.for_server(by["s1"]))
    with pytest.raises(ConfigError) as err:
        r.for_server(by["bad-6"])
    assert "broken" in str(err.value) and "cannot decrypt" in str(err.value)
    with pytest.raises(AuthError) as err:
        CredentialResolver(fleet["rest"]).for_server(by["s5"])
    assert "no iDRAC credentials" in str(err.value) and "IDRAC_USER" in err.value.hint
    assert s  # fleet ids exist


def test_per_server_tasks_and_a_failing_server(fleet, executors):
    b, s = fleet["backend"], fleet["srv"]
    jid = insert_jobs(b, TARGETS_TYPE, target_scope={"server_ids": [s["s1"], s["s2"], s["bad-6"]]})[0]
    ex = executors("targets", "--once")
    assert ex.wait() == 0, ex.output[-3000:]
    row = job(b, jid)
    assert row["status"] == "failed"
    assert "1 of 3 targets failed" in row["details"]["error"] and "bad-6" in row["details"]["error"]
    tasks = {
        t["server_id"]: t
        for t in b.sql(
            "SELECT server_id::text, status::text, progress, log FROM job_tasks WHERE job_id = %s", (jid,)
        )
    }
    assert {tasks[s["s1"]]["status"], tasks[s["s2"]]["status"]} == {"completed"}
    assert tasks[s["bad-6"]]["status"] == "failed" and "refused" in tasks[s["bad-6"]]["log"]
    assert "working on s1" in tasks[s["s1"]]["log"]
    assert sorted(row["details"]["result"]["done"]) == ["10.9.0.1", "10.9.0.2:8443"]
    audit = b.sql(
        "SELECT count(*) AS n FROM idrac_commands WHERE job_id = %s AND server_id IS NOT NULL", (jid,)
    )
    assert audit[0]["n"] == 3
    locks = b.sql("SELECT count(*) AS n FROM executor_server_locks")
    assert locks[0]["n"] == 0, "server locks released"


def test_secrets_never_reach_logs_job_fields_tasks_or_audit(fleet, executors):
    b, s = fleet["backend"], fleet["srv"]
    jid = insert_jobs(b, SCRIPTED_TYPE, details={"mode": "secret"}, target_scope={"server_ids": [s["s1"]]})[0]
    ex = executors(
        "secrets", "--once", IDRAC_PASSWORD="env-default-Pw-123", IDRAC_USER="dflt", LOG_LEVEL="DEBUG"
    )
    assert ex.wait() == 0, ex.output[-3000:]
    row = job(b, jid)
    assert row["status"] == "failed"
    everything = json.dumps(
        [
            b.sql("SELECT details, target_scope, notes FROM jobs"),
            b.sql("SELECT log FROM job_tasks"),
            b.sql(
                "SELECT endpoint, full_url, error_message, request_headers, request_body FROM idrac_commands"
            ),
            b.sql("SELECT capabilities, last_error FROM executor_heartbeats"),
        ],
        default=str,
    )
    output = ex.output
    for secret in (SECRET, b.service_role_key, "env-default-Pw-123", KEY_B64):
        assert secret not in everything
        assert secret not in output
    assert "***" in json.dumps(row["details"]), "the handler's careless log line was redacted, not dropped"
