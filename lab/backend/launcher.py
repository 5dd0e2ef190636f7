"""Start the lab backend as a subprocess on a throwaway database (tests, benchmarks, the demo).

    with temp_database() as url:
        backend = start_backend(url)
        ...
        backend.close()

or simply `backend = start_backend()` (creates its own database, dropped by close()).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

from . import admin

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_NO_SERVER_HINT = (
    "The lab backend needs a running PostgreSQL server (15+) that it can create databases on. "
    "Set DATABASE_URL (e.g. postgresql://user:pass@127.0.0.1:5432/postgres) or the PG* variables "
    "(PGHOST, PGPORT, PGUSER, PGPASSWORD), or start one locally, e.g. "
    "`sudo apt-get install postgresql && sudo -u postgres createuser -s $USER`."
)


class NoDatabaseServer(RuntimeError):
    """No PostgreSQL server reachable with the settings given."""


def server_url() -> str:
    """The maintenance-database URL: DATABASE_URL, else PG* variables, else local postgres."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if any(k in os.environ for k in ("PGHOST", "PGPORT", "PGUSER")):
        return ""  # libpq reads the PG* variables itself
    return DEFAULT_SERVER_URL


def _with_dbname(url: str, dbname: str) -> str:
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def create_database(prefix: str = "lab_backend") -> str:
    base = server_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(
            _with_dbname(base, "postgres") if base else "dbname=postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise NoDatabaseServer(f"cannot reach PostgreSQL ({exc}). {_NO_SERVER_HINT}") from None
    return _with_dbname(base, name) if base else f"dbname={name}"


def drop_database(url: str) -> None:
    base = server_url()
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        return
    with psycopg.connect(_with_dbname(base, "postgres") if base else "dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def temp_database(prefix: str = "lab_backend") -> Iterator[str]:
    """A uniquely named database on the local server, dropped afterwards."""
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


class BackendProcess:
    """A running `python -m lab.backend` subprocess and helpers to reach its database."""

    def __init__(
        self,
        database_url: str,
        port: int = 0,
        *,
        apply_migrations: bool = True,
        owns_database: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.port = port
        self.url = ""
        self.anon_key = ""
        self.service_role_key = ""
        self.jwt_secret = ""
        self.executor_secret = ""
        self._owns_database = owns_database
        self._env = env
        self._proc: subprocess.Popen[str] | None = None
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._launch(apply_migrations=apply_migrations)

    # -- process ----------------------------------------------------------------------------------

    def _launch(self, *, apply_migrations: bool = False) -> None:
        cmd = [
            sys.executable,
            "-m",
            "lab.backend",
            "--database-url",
            self.database_url,
            "--port",
            str(self.port),
        ]
        if apply_migrations:
            cmd.append("--apply-migrations")
        if self.jwt_secret:  # a restart keeps the secret and keys, so clients keep working
            cmd += [
                "--jwt-secret",
                self.jwt_secret,
                "--anon-key",
                self.anon_key,
                "--service-role-key",
                self.service_role_key,
                "--executor-secret",
                self.executor_secret,
            ]
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=None, text=True, cwd=str(ROOT), env=env
        )
        line = self._read_ready_line(timeout=60.0)
        info = json.loads(line)
        self.url = info["url"]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.anon_key = info["anon_key"]
        self.service_role_key = info["service_role_key"]
        self.jwt_secret = info["jwt_secret"]
        self.executor_secret = info["executor_secret"]

    def _read_ready_line(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self._proc.kill()
            self._proc.wait()
            raise RuntimeError(
                f"lab backend did not start (exit code {self._proc.returncode}); see its stderr above"
            )
        return line

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        """Stop the HTTP server process (the database stays); for outage tests."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()
        self._proc = None

    def start(self) -> None:
        """Start it again on the same port, database, secret and keys."""
        if self.running:
            return
        self._launch()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the process and drop the database if we created it."""
        self.stop()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self._owns_database:
            drop_database(self.database_url)
            self._owns_database = False

    # -- direct database access for tests ----------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)  # type: ignore[arg-type]
        return self._conn

    def sql(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        """Run one statement directly (autocommit, superuser); rows as dicts."""
        with self._lock:
            conn = self._connection()
            try:
                cur = conn.execute(query, params)  # type: ignore[arg-type]
            except psycopg.OperationalError:
                self._conn = None  # reconnect next time (server restarted, connection dropped)
                raise
            return cur.fetchall() if cur.description else []

    def create_user(self, email: str, password: str, role: str | None = "admin") -> str:
        with self._lock:
            return admin.create_user(self._connection(), email, password, role)

    def create_api_token(self, name: str = "test") -> str:
        with self._lock:
            return admin.create_api_token(self._connection(), name)

    def reset(self) -> None:
        """Empty every app table (users, roles and API tokens stay)."""
        keep = {"user_roles", "api_tokens"}
        rows = self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        tables = [r["tablename"] for r in rows if r["tablename"] not in keep]
        if tables:
            self.sql("TRUNCATE " + ", ".join(f'public."{t}"' for t in tables) + " RESTART IDENTITY CASCADE")

    def headers(self, key: str | None = None) -> dict[str, str]:
        """apikey + Authorization headers for `key` (default: the service-role key)."""
        key = key or self.service_role_key
        return {"apikey": key, "Authorization": f"Bearer {key}"}

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_backend(
    database_url: str | None = None, port: int = 0, apply_migrations: bool = True
) -> BackendProcess:
    """Start the backend; without database_url it creates a fresh database that close() drops."""
    owns = database_url is None
    url = database_url or create_database()
    try:
        return BackendProcess(url, port, apply_migrations=apply_migrations, owns_database=owns)
    except Exception:
        if owns:
            drop_database(url)
        raise
