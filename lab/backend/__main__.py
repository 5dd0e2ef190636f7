"""python -m lab.backend --database-url URL [--port 0] [--apply-migrations]

Prints ONE JSON line {"url", "anon_key", "service_role_key", "jwt_secret", "database_url",
"executor_secret"} on stdout when ready; stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from . import keys
from .migrations import apply_all
from .server import Backend, BackendConfig, make_server


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lab.backend", description="Supabase-compatible lab backend")
    p.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL"), help="PostgreSQL URL (or DATABASE_URL)"
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    p.add_argument(
        "--apply-migrations", action="store_true", help="apply bootstrap.sql and supabase/migrations first"
    )
    p.add_argument("--jwt-secret", default=None, help="HS256 secret (default: random)")
    p.add_argument("--anon-key", default=None)
    p.add_argument("--service-role-key", default=None)
    p.add_argument(
        "--executor-secret",
        default=os.environ.get("EXECUTOR_SHARED_SECRET"),
        help="HMAC secret for update-job/vcenter-sync (default: EXECUTOR_SHARED_SECRET or random)",
    )
    p.add_argument("--pool-size", type=int, default=16)
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.database_url:
        print("error: no database: pass --database-url or set DATABASE_URL", file=sys.stderr)
        return 2
    if args.apply_migrations:
        apply_all(args.database_url)
    secret = args.jwt_secret or keys.new_secret()
    config = BackendConfig(
        database_url=args.database_url,
        jwt_secret=secret,
        anon_key=args.anon_key or keys.api_key(secret, "anon"),
        service_role_key=args.service_role_key or keys.api_key(secret, "service_role"),
        executor_secret=args.executor_secret or keys.new_secret(),
        port=args.port,
        pool_size=args.pool_size,
    )
    backend = Backend(config)
    server = make_server(backend)
    host, port = server.server_address[:2]

    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    ready = {
        "url": f"http://{host}:{port}",
        "anon_key": config.anon_key,
        "service_role_key": config.service_role_key,
        "jwt_secret": config.jwt_secret,
        "database_url": config.database_url,
        "executor_secret": config.executor_secret,
    }
    print(json.dumps(ready), flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
