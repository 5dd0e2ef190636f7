"""The migrations apply to an empty database and, applied again, change nothing."""

from __future__ import annotations

import psycopg
import pytest

from lab.backend.launcher import temp_database
from lab.backend.migrations import BOOTSTRAP, apply_all, apply_file, migration_files

# A catalog fingerprint: tables/columns/types/defaults, constraints, indexes, functions and
# their ACLs, enum values and table grants. Anything a second apply could change shows up here.
FINGERPRINT = """
SELECT 'col', table_name || '.' || column_name || ':' || data_type || ':' || udt_name || ':' ||
       is_nullable || ':' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'con', conrelid::regclass::text || ':' || conname || ':' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'idx', indexname || ':' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'fn', p.oid::regprocedure::text || ':' || md5(pg_get_functiondef(p.oid)) || ':' ||
       coalesce(p.proacl::text, '')
  FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prokind = 'f'
UNION ALL
SELECT 'enum', t.typname || ':' || e.enumsortorder || ':' || e.enumlabel
  FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
UNION ALL
SELECT 'acl', c.relname || ':' || coalesce(c.relacl::text, '')
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


def _fingerprint(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(FINGERPRINT).fetchall()  # type: ignore[return-value]


@pytest.fixture
def empty_db():
    with temp_database("lab_migr") as url:
        yield url


def test_apply_twice_changes_nothing(empty_db: str) -> None:
    applied = apply_all(empty_db)
    assert "0001_dsm_schema.sql" in applied
    first = _fingerprint(empty_db)
    assert any(kind == "col" and item.startswith("jobs.details:jsonb") for kind, item in first)
    apply_all(empty_db)
    assert _fingerprint(empty_db) == first


def test_schema_has_contract_objects(empty_db: str) -> None:
    apply_all(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        labels = {r[0] for r in conn.execute("SELECT unnest(enum_range(NULL::job_status))::text")}
        assert labels >= {"pending", "running", "completed", "failed", "cancelled", "paused"}
        types = {r[0] for r in conn.execute("SELECT unnest(enum_range(NULL::job_type))::text")}
        for t in ("power_action", "firmware_update", "rolling_cluster_update", "test_replication_pair"):
            assert t in types
        cols = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'servers'"
            )
        }
        assert {"credential_test_status", "credential_last_tested", "requires_legacy_ssl"} <= cols
        # jobs.details may be NULL
        conn.execute("INSERT INTO jobs (job_type, details) VALUES ('health_check', NULL)")


def test_existing_enum_gains_paused(empty_db: str) -> None:
    """Applied to a DSM database whose job_status lacks 'paused', the value is added."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        apply_file(conn, BOOTSTRAP)
        conn.execute("CREATE TYPE job_status AS ENUM ('pending','running','completed','failed','cancelled')")
        conn.execute(
            "CREATE TABLE jobs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), job_type text,"
            " status job_status NOT NULL DEFAULT 'pending', details jsonb,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO jobs (job_type) VALUES ('x')")
        for path in migration_files()[:1]:
            apply_file(conn, path)
        conn.execute("UPDATE jobs SET status = 'paused'")
        assert conn.execute("SELECT status::text FROM jobs").fetchone()[0] == "paused"


def test_functions_only_for_service_role(empty_db: str) -> None:
    apply_all(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for fn in (
            "encrypt_password(text,text)",
            "decrypt_password(text,text)",
            "append_job_console_log(uuid,text)",
        ):
            for role, expected in (("anon", False), ("authenticated", False), ("service_role", True)):
                ok = conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", [role, fn]).fetchone()[
                    0
                ]
                assert ok is expected, (fn, role)
        assert conn.execute("SELECT has_table_privilege('anon', 'jobs', 'SELECT')").fetchone()[0] is False


def test_encrypt_decrypt_contract(empty_db: str) -> None:
    """pgcrypto encrypt(data, key, 'aes') = AES-256-CBC, zero IV, PKCS#7, base64 (CONTRACT.md 5)."""
    import base64
    import os

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    apply_all(empty_db)
    key = base64.b64encode(os.urandom(32)).decode()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        enc = conn.execute("SELECT encrypt_password('s3cret-ü', %s)", [key]).fetchone()[0]
        dec = Cipher(algorithms.AES(base64.b64decode(key)), modes.CBC(b"\0" * 16)).decryptor()
        raw = dec.update(base64.b64decode(enc)) + dec.finalize()
        unpad = padding.PKCS7(128).unpadder()
        assert (unpad.update(raw) + unpad.finalize()).decode() == "s3cret-ü"
        assert conn.execute("SELECT decrypt_password(%s, %s)", [enc, key]).fetchone()[0] == "s3cret-ü"
        wrong = base64.b64encode(os.urandom(32)).decode()
        assert conn.execute("SELECT decrypt_password(%s, %s)", [enc, wrong]).fetchone()[0] is None
        assert conn.execute("SELECT decrypt_password('not base64!', %s)", [key]).fetchone()[0] is None


def test_console_log_append_is_atomic(empty_db: str) -> None:
    import threading

    apply_all(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        jid = conn.execute("INSERT INTO jobs (job_type) VALUES ('health_check') RETURNING id").fetchone()[0]

    def writer(n: int) -> None:
        with psycopg.connect(empty_db, autocommit=True) as c:
            for i in range(25):
                c.execute("SELECT append_job_console_log(%s, %s)", [jid, f"w{n}-{i}"])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(empty_db) as conn:
        log = conn.execute("SELECT details->'console_log' FROM jobs WHERE id = %s", [jid]).fetchone()[0]
    assert sorted(log) == sorted(f"w{n}-{i}" for n in range(4) for i in range(25))
