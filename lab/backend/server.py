"""The HTTP server: routes /rest/v1, /auth/v1 and /functions/v1, checks keys, runs one transaction each.

Standard-library ThreadingHTTPServer (HTTP/1.1 keep-alive) over a psycopg connection pool. Listens on
127.0.0.1 only.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import psycopg
from psycopg.sql import SQL, Literal
from psycopg_pool import ConnectionPool, PoolTimeout

from . import keys
from .errors import ApiError, from_pg, pgrst
from .postgrest import JSON_CT, Request, Response, dispatch
from .schema import SchemaCache

log = logging.getLogger("lab.backend")
T = TypeVar("T")


@dataclass
class BackendConfig:
    database_url: str
    jwt_secret: str
    anon_key: str
    service_role_key: str
    executor_secret: str
    host: str = "127.0.0.1"
    port: int = 0
    pool_size: int = 16


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), {"Content-Type": JSON_CT, **(headers or {})})


class Backend:
    """Shared state of the server: config, connection pool and schema cache."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.pool = ConnectionPool(
            config.database_url,
            min_size=2,
            max_size=config.pool_size,
            timeout=10.0,
            kwargs={"autocommit": True},  # transactions are explicit: see transaction()
            open=True,
            name="lab-backend",
        )
        self.pool.wait(timeout=15.0)
        self.cache = SchemaCache()
        with self.pool.connection() as conn:
            self.cache.load(conn)

    def close(self) -> None:
        self.pool.close()

    # -- keys -------------------------------------------------------------------------------------

    def check_apikey(self, headers: dict[str, str], query: list[tuple[str, str]]) -> Response | None:
        """The gateway check Supabase does before PostgREST and Auth (legacy JWT API keys)."""
        apikey = headers.get("apikey") or next((v for k, v in query if k == "apikey"), None)
        if not apikey:
            return json_response(
                401,
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
            )
        if apikey not in (self.config.anon_key, self.config.service_role_key):
            return json_response(
                401,
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
            )
        return None

    def claims_for(self, headers: dict[str, str]) -> dict[str, Any]:
        """Claims of the Bearer JWT (or of the apikey when no Authorization header is sent)."""
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("apikey", "")
        try:
            return keys.decode(token, self.config.jwt_secret)
        except keys.InvalidToken as exc:
            code = "PGRST303" if exc.expired else "PGRST301"
            err = pgrst(401, code, str(exc))
            err.headers["WWW-Authenticate"] = (
                'Bearer error="invalid_token", error_description="' + str(exc) + '"'
            )
            raise err from None

    # -- database ---------------------------------------------------------------------------------

    def transaction(self, role: str, claims: dict[str, Any], fn: Callable[[psycopg.Connection], T]) -> T:
        """Run fn in ONE transaction under `role`, with request.jwt.claims set as PostgREST does."""
        try:
            with self.pool.connection() as conn:
                # BEGIN and the settings in ONE round trip (simple protocol, literals quoted by psycopg).
                # synchronous_commit=off: a lab stand-in need not wait for fsync; visibility, locking
                # and error behaviour are unchanged (only a crash could lose the last commits).
                setup = SQL(
                    "BEGIN; SET LOCAL synchronous_commit = off; "
                    "SELECT set_config('role', {}, true), set_config('request.jwt.claims', {}, true)"
                ).format(Literal(role), Literal(json.dumps(claims)))
                conn.execute(setup)
                try:
                    result = fn(conn)
                except BaseException:
                    if not conn.broken:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
        except PoolTimeout:
            raise pgrst(504, "PGRST003", "Timed out acquiring connection from connection pool.") from None
        except psycopg.OperationalError as exc:
            if exc.sqlstate:
                raise from_pg(exc, role) from None
            raise pgrst(
                503, "PGRST001", "Database client error. Retrying the connection.", str(exc)
            ) from None
        except psycopg.Error as exc:
            raise from_pg(exc, role) from None

    def rest(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes
    ) -> Response:
        denied = self.check_apikey(headers, query)
        if denied:
            return denied
        claims = self.claims_for(headers)
        role = str(claims.get("role") or "anon")
        req = Request.build(method, path, query, headers, body)
        return self.transaction(role, claims, lambda conn: dispatch(conn, self.cache, req))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "supabase-lab/1.0"
    backend: Backend  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def setup(self) -> None:
        super().setup()
        # Small JSON answers: without NODELAY, Nagle + delayed ACK adds ~40 ms per response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, resp: Response) -> None:
        body = b"" if self.command == "HEAD" else resp.body
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        # Headers and body in ONE write (end_headers() would flush the headers on their own).
        self._headers_buffer.append(b"\r\n")
        data = b"".join(self._headers_buffer) + body
        self._headers_buffer = []
        self.wfile.write(data)

    def _handle(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        query = parse_qsl(url.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            resp = self._route(url.path, query, headers, body)
        except ApiError as err:
            resp = Response(err.status, _error_body(err), {"Content-Type": JSON_CT, **err.headers})
        except Exception:  # the server boundary: one broad catch, logged, answered 500
            log.exception("unhandled error for %s %s", self.command, url.path)
            resp = json_response(
                500,
                {
                    "code": "LAB500",
                    "message": "internal error in the lab backend",
                    "details": None,
                    "hint": None,
                },
            )
        self._send(resp)

    def _route(
        self, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes
    ) -> Response:
        b = self.backend
        if path.startswith("/rest/v1"):
            return b.rest(self.command, path[len("/rest/v1") :] or "/", query, headers, body)
        if path.startswith("/auth/v1/"):
            from .auth import handle_auth

            return handle_auth(b, self.command, path[len("/auth/v1") :], query, headers, body)
        if path.startswith("/functions/v1/"):
            from .functions import handle_function

            return handle_function(b, self.command, path[len("/functions/v1/") :].strip("/"), headers, body)
        if path == "/health":
            return json_response(200, {"status": "ok"})
        return json_response(404, {"message": "no Route matched with those values"})

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _handle

    def do_OPTIONS(self) -> None:
        self._read_body()
        self._send(
            Response(
                200,
                b"",
                {
                    "Access-Control-Allow-Origin": "*",
                    "Access-Control-Allow-Methods": "GET, POST, PATCH, PUT, DELETE, OPTIONS, HEAD",
                    "Access-Control-Allow-Headers": "authorization, apikey, content-type, prefer, range, x-client-info",
                },
            )
        )


def _error_body(err: ApiError) -> bytes:
    return json.dumps(
        {"code": err.code, "details": err.details, "hint": err.hint, "message": err.message}
    ).encode()


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(backend: Backend) -> LabHTTPServer:
    if backend.config.host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the lab backend listens on loopback only")
    handler = type("BoundHandler", (Handler,), {"backend": backend})
    return LabHTTPServer((backend.config.host, backend.config.port), handler)


def serve_in_thread(server: LabHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="lab-backend", daemon=True)
    t.start()
    return t
