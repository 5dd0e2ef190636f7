"""Apply lab/backend/bootstrap.sql (lab only) and supabase/migrations/*.sql in name order."""

from __future__ import annotations

from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = ROOT / "supabase" / "migrations"
BOOTSTRAP = Path(__file__).with_name("bootstrap.sql")


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("*.sql"))


def apply_file(conn: psycopg.Connection, path: Path) -> None:
    # One simple-protocol execute per file: the whole file is one implicit transaction, so a
    # failing file leaves nothing half-applied.
    conn.execute(path.read_text(encoding="utf-8").encode())  # type: ignore[arg-type]


def apply_all(database_url: str, *, bootstrap: bool = True) -> list[str]:
    applied = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        if bootstrap:
            apply_file(conn, BOOTSTRAP)
            applied.append(BOOTSTRAP.name)
        for path in migration_files():
            apply_file(conn, path)
            applied.append(path.name)
    return applied
