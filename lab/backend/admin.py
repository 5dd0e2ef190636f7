"""Lab helpers: create users (lab_auth.users + user_roles) and API tokens (api_tokens, sha256).

CLI: python -m lab.backend.admin create-user --database-url URL --email E --password P [--role admin]
     python -m lab.backend.admin create-token --database-url URL [--name NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

import psycopg
from psycopg.rows import tuple_row


def create_user(conn: psycopg.Connection, email: str, password: str, role: str | None = "admin") -> str:
    """Create (or reset the password of) a lab user and give it `role`; returns the user id."""
    cur = conn.cursor(row_factory=tuple_row)
    row = cur.execute(
        """
        INSERT INTO lab_auth.users (email, encrypted_password)
        VALUES (lower(%s), extensions.crypt(%s, extensions.gen_salt('bf', 4)))
        ON CONFLICT (email) DO UPDATE
          SET encrypted_password = EXCLUDED.encrypted_password, updated_at = now()
        RETURNING id::text
        """,
        [email, password],
    ).fetchone()
    user_id = row[0]  # type: ignore[index]
    if role:
        cur.execute(
            "INSERT INTO public.user_roles (user_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [user_id, role],
        )
    return user_id


def create_api_token(conn: psycopg.Connection, name: str = "test", user_id: str | None = None) -> str:
    """Store sha256(token) in api_tokens as the DSM app does; returns the plaintext token once."""
    token = "dsm_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    conn.execute(
        "INSERT INTO public.api_tokens (name, token_hash, user_id) VALUES (%s, %s, %s)",
        [name, digest, user_id],
    )
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.backend.admin", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("create-user", help="create a lab user with an app role")
    u.add_argument("--database-url", required=True)
    u.add_argument("--email", required=True)
    u.add_argument("--password", required=True)
    u.add_argument("--role", default="admin", choices=["admin", "operator", "viewer", "none"])
    t = sub.add_parser("create-token", help="create an API token for openmanage-sync (printed once)")
    t.add_argument("--database-url", required=True)
    t.add_argument("--name", default="lab")
    args = parser.parse_args(argv)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        if args.cmd == "create-user":
            print(create_user(conn, args.email, args.password, None if args.role == "none" else args.role))
        else:
            print(create_api_token(conn, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
