"""lib/checks.py against real sockets on 127.0.0.1: a closed port, a plain TCP listener, a TLS
server with a self-signed certificate, and the lab backend for the backend and migrations probes."""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.tls import make_tls
from lib.checks import (
    Endpoint,
    backend_check,
    dns_check,
    endpoint_checks,
    endpoint_rows,
    migrations_check,
    tcp_check,
    tls_check,
)
from lib.config import Env, dsm_settings
from lib.errors import AuthError, ConfigError, ConnectRefusedError, DNSError, TLSError, exit_code_for
from lib.http import TLSConfig
from lib.sync.common import Checklist

OME_TLS = TLSConfig(verify=True, env_prefix="OME")


def endpoint(port: int, tls: TLSConfig | None = OME_TLS, host: str = "127.0.0.1") -> Endpoint:
    return Endpoint(host, port, "OME_HOST", "OME", tls)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on: kept bound for the whole test (so no other process can take it)
    but never listening, so connecting is refused (Linux answers a SYN to it with RST)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@contextlib.contextmanager
def server(tls: ssl.SSLContext | None = None, *, greeting: bytes = b"") -> Iterator[int]:
    """A listener on 127.0.0.1 that shakes hands (when tls is given) and hangs up."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(5)
            with contextlib.suppress(OSError, ssl.SSLError):
                if greeting:
                    conn.sendall(greeting)
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                # Hang up only after the client does, so it always reads what was sent (never a
                # reset racing the greeting).
                conn.recv(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for 127.0.0.1 (as appliances ship) and its PEM file."""
    files = make_tls(
        tmp_path_factory.mktemp("tls"),
        name="appliance",
        common_name="appliance.lab.local",
        self_signed=True,
        hosts=("127.0.0.1",),
    )
    return files.server_context(), str(files.cert_file)


# ---------------------------------------------------------------------------------------------------
# DNS
# ---------------------------------------------------------------------------------------------------
def test_dns_resolves_an_address_and_localhost() -> None:
    assert dns_check(endpoint(443)) == "127.0.0.1 -> 127.0.0.1"
    assert "127.0.0.1" in dns_check(endpoint(443, host="localhost"))


def test_dns_failure_names_the_variable_to_fix() -> None:
    def no_such_name(*args: object, **kw: object) -> list[object]:
        # injected: a real lookup of a made-up name would send a query off this machine
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(DNSError) as err:
        dns_check(endpoint(443, host="ome.example.invalid"), resolve=no_such_name)
    assert "ome.example.invalid" in err.value.message
    assert "OME_HOST" in err.value.hint


# ---------------------------------------------------------------------------------------------------
# TCP
# ---------------------------------------------------------------------------------------------------
def test_tcp_closed_port_fails_with_hint(closed_port: int) -> None:
    port = closed_port
    with pytest.raises(ConnectRefusedError) as err:
        tcp_check(endpoint(port))
    assert f"127.0.0.1:{port}" in err.value.message
    assert "OME_HOST" in err.value.hint and "port" in err.value.hint
    assert exit_code_for(err.value) == 4


def test_tcp_listening_port_passes() -> None:
    with server() as port:
        assert tcp_check(endpoint(port)).startswith(f"127.0.0.1:{port} accepts connections")


# ---------------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------------
def test_tls_self_signed_fails_with_the_ca_bundle_hint(self_signed) -> None:
    ctx, _ = self_signed
    with server(ctx) as port, pytest.raises(TLSError) as err:
        tls_check(endpoint(port))
    assert "self-signed certificate" in err.value.message
    assert "OME_CA_BUNDLE" in err.value.hint and "OME_VERIFY_SSL=false" in err.value.hint


def test_tls_self_signed_accepted_with_its_certificate_as_ca_bundle(self_signed) -> None:
    ctx, pem = self_signed
    with server(ctx) as port:
        detail = tls_check(endpoint(port, TLSConfig(verify=True, ca_bundle=pem, env_prefix="OME")))
    assert "CN=appliance.lab.local" in detail and "trusted via OME_CA_BUNDLE" in detail


def test_tls_verification_off_passes_but_says_so(self_signed) -> None:
    ctx, _ = self_signed
    with server(ctx) as port:
        detail = tls_check(endpoint(port, TLSConfig(verify=False, env_prefix="OME")))
    assert "NOT verified" in detail and "OME_VERIFY_SSL=false" in detail


def test_tls_against_a_plain_tcp_service_fails_as_a_handshake_problem() -> None:
    with server(greeting=b"HTTP/1.1 400 Bad Request\r\n\r\n") as port, pytest.raises(TLSError) as err:
        tls_check(endpoint(port))
    # The client read the plain-HTTP answer where a TLS record belongs: a handshake failure whose
    # hint sends the operator to the port/scheme, not to the certificate settings.
    assert "TLS handshake with OME" in err.value.message and "failed" in err.value.message
    assert "OME speaks HTTPS on that port" in err.value.hint
    assert "CA_BUNDLE" not in err.value.hint


def test_plain_http_endpoint_has_no_tls_line() -> None:
    ep = Endpoint.from_url(
        "http://127.0.0.1:8000", setting="SUPABASE_URL", system="the DSM backend", tls=OME_TLS
    )
    assert ep.tls is None and ep.port == 8000
    assert [name for name, _, _ in endpoint_rows(ep, "backend")] == ["backend DNS", "backend TCP"]


@pytest.mark.parametrize(
    "text,host,port,https",
    [
        ("ome.example.com", "ome.example.com", 443, True),
        ("10.1.2.3:8443", "10.1.2.3", 8443, True),
        ("https://vc.example.com/sdk", "vc.example.com", 443, True),
        ("http://127.0.0.1:54321", "127.0.0.1", 54321, False),
        ("fe80::1", "fe80::1", 443, True),
    ],
)
def test_endpoint_from_url(text: str, host: str, port: int, https: bool) -> None:
    ep = Endpoint.from_url(text, setting="OME_HOST", system="OME", tls=OME_TLS)
    assert (ep.host, ep.port, ep.tls is not None) == (host, port, https)


def test_endpoint_from_url_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        Endpoint.from_url("ftp://x", setting="OME_HOST", system="OME", tls=OME_TLS)


# ---------------------------------------------------------------------------------------------------
# On a Checklist: one line each, hint under a FAIL, the rest skipped, non-zero exit
# ---------------------------------------------------------------------------------------------------
def test_checklist_lines_for_a_closed_port(closed_port: int) -> None:
    out = io.StringIO()
    checks = Checklist(out)
    assert endpoint_checks(checks, endpoint(closed_port), "OME") is False
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("OK   OME DNS: 127.0.0.1 -> 127.0.0.1")
    assert lines[1].startswith("FAIL OME TCP: Connection refused")
    assert lines[2].strip().startswith("hint: Nothing listens there: check OME_HOST")
    assert lines[3].startswith("SKIP OME TLS")
    assert not checks.ok and checks.exit_code() == 4


def test_checklist_lines_for_a_trusted_tls_endpoint(self_signed) -> None:
    ctx, pem = self_signed
    out = io.StringIO()
    checks = Checklist(out)
    with server(ctx) as port:
        ok = endpoint_checks(checks, endpoint(port, TLSConfig(ca_bundle=pem, env_prefix="OME")), "OME")
    assert ok, out.getvalue()
    assert [ln.split()[0] for ln in out.getvalue().splitlines()] == ["OK", "OK", "OK"]
    assert checks.exit_code() == 0


def test_endpoint_rows_stop_at_the_first_failure_with_its_hint(self_signed) -> None:
    ctx, _ = self_signed
    with server(ctx) as port:
        rows = endpoint_rows(endpoint(port), "backend")
    assert [(name, ok) for name, ok, _ in rows] == [
        ("backend DNS", True),
        ("backend TCP", True),
        ("backend TLS", False),
    ]
    assert "hint: Set OME_CA_BUNDLE" in rows[-1][2]


# ---------------------------------------------------------------------------------------------------
# Backend and migrations, against the lab backend
# ---------------------------------------------------------------------------------------------------
def _dsm(backend, **overrides: str):
    environ = {
        "SUPABASE_URL": backend.url,
        "SUPABASE_SERVICE_ROLE_KEY": backend.service_role_key,
        **overrides,
    }
    env = Env({}, environ=environ, env_file=Path("/nonexistent/.env-not-used"))
    env.problems.clear()
    return dsm_settings(env, need_service_role=True)


def test_backend_check_accepts_the_real_keys_and_refuses_a_wrong_one(backend) -> None:
    dsm = _dsm(backend, SUPABASE_ANON_KEY=backend.anon_key)
    assert "service-role key accepted" in backend_check(dsm)
    assert "anon key accepted" in backend_check(dsm, key=backend.anon_key)
    with pytest.raises(AuthError) as err:
        backend_check(_dsm(backend, SUPABASE_SERVICE_ROLE_KEY="not-the-key"))
    assert "service-role" in err.value.message and "not-the-key" not in err.value.message


def test_backend_check_on_a_dead_backend_is_a_connection_failure(closed_port: int) -> None:
    env = Env(
        {}, environ={"SUPABASE_URL": f"http://127.0.0.1:{closed_port}", "SUPABASE_SERVICE_ROLE_KEY": "k"}
    )
    with pytest.raises(ConnectRefusedError) as err:
        backend_check(dsm_settings(env, need_service_role=True))
    assert "SUPABASE_URL" in err.value.hint


def test_migrations_check_passes_on_a_migrated_database_and_names_the_file_otherwise() -> None:
    from lab.backend.launcher import start_backend
    from lib.dsm.rest import RestClient
    from lib.executor.store import MIGRATION_FILE, SCHEMA_VERSION

    b = start_backend()  # its own database: this test removes a migration function
    try:
        with RestClient(b.url, b.service_role_key) as rest:
            detail = migrations_check(rest)
            assert detail.startswith("schema version ")
            assert int(detail.rsplit(" ", 1)[1]) >= SCHEMA_VERSION  # the migrations in the tree
            b.sql("DROP FUNCTION executor_schema_version()")
            with pytest.raises(ConfigError) as err:
                migrations_check(rest)
        assert MIGRATION_FILE in err.value.hint
    finally:
        b.close()
