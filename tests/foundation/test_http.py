"""The retry policy (unit, with `responses`) and TLS and connection failures (real local servers)."""

import http.server
import socket
import ssl
import threading

import pytest
import requests
import responses

from lab.tls import make_tls
from lib.errors import AuthError, ConnectRefusedError, RemoteError, TLSError
from lib.http import HttpClient, RetryPolicy, TLSConfig, raise_for_status

BASE = "https://ome.test"


def client(**kw):
    sleeps: list[float] = []
    c = HttpClient(BASE, TLSConfig(), system="OME", sleep=sleeps.append, **kw)
    return c, sleeps


@responses.activate
def test_503_is_retried_with_growing_backoff_then_succeeds():
    for _ in range(3):
        responses.get(f"{BASE}/api/x", status=503)
    responses.get(f"{BASE}/api/x", json={"ok": True})
    c, sleeps = client(retry=RetryPolicy(attempts=5, backoff_base=1.0, backoff_max=8.0))
    resp = c.get("/api/x")
    assert resp.status_code == 200
    assert len(responses.calls) == 4
    assert len(sleeps) == 3
    # full jitter inside [b/2, b] with b = 1, 2, 4
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0 and 2.0 <= sleeps[2] <= 4.0


@responses.activate
def test_retry_after_is_honoured():
    responses.get(f"{BASE}/api/x", status=503, headers={"Retry-After": "7"})
    responses.get(f"{BASE}/api/x", json={})
    c, sleeps = client()
    assert c.get("/api/x").status_code == 200
    assert sleeps == [7.0]


@responses.activate
def test_gives_up_after_the_bound_and_returns_the_last_answer():
    responses.get(f"{BASE}/api/x", status=503)
    c, sleeps = client(retry=RetryPolicy(attempts=3))
    resp = c.get("/api/x")
    assert resp.status_code == 503
    assert len(responses.calls) == 3 and len(sleeps) == 2
    with pytest.raises(RemoteError) as info:
        raise_for_status(resp, system="OME")
    assert info.value.status == 503


@responses.activate
def test_401_is_never_retried():
    responses.get(f"{BASE}/api/x", status=401, json={"error": {"message": "Unable to authenticate"}})
    c, sleeps = client()
    resp = c.get("/api/x")
    assert len(responses.calls) == 1 and sleeps == []
    with pytest.raises(AuthError) as info:
        raise_for_status(resp, system="OME")
    assert "Unable to authenticate" in str(info.value)


@responses.activate
def test_unmarked_post_is_never_retried():
    responses.post(f"{BASE}/api/act", status=503)
    responses.post(f"{BASE}/api/act", status=200)
    c, sleeps = client()
    assert c.post("/api/act").status_code == 503
    assert len(responses.calls) == 1 and sleeps == []


@responses.activate
def test_marked_post_retries():
    responses.post(f"{BASE}/api/act", status=502)
    responses.post(f"{BASE}/api/act", status=201)
    c, sleeps = client()
    assert c.post("/api/act", idempotent=True).status_code == 201
    assert len(responses.calls) == 2 and len(sleeps) == 1


@responses.activate
def test_connection_errors_are_retried_for_gets():
    responses.get(f"{BASE}/api/x", body=requests.ConnectionError("Connection refused"))
    responses.get(f"{BASE}/api/x", json={})
    c, sleeps = client()
    assert c.get("/api/x").status_code == 200
    assert len(sleeps) == 1


# --- real sockets -------------------------------------------------------------------------


def _self_signed(tmp_path):
    files = make_tls(tmp_path, name="ome", common_name="127.0.0.1", self_signed=True, hosts=("127.0.0.1",))
    return files.cert_file, files.key_file


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server(tmp_path):
    cert, key = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(cert)
    server.shutdown()
    server.server_close()


def test_self_signed_certificate_is_refused_with_a_hint(https_server):
    url, _ = https_server
    c = HttpClient(url, TLSConfig(env_prefix="OME"), system="OME", sleep=lambda s: None)
    with pytest.raises(TLSError) as info:
        c.get("/")
    assert "TLS certificate verification failed" in info.value.message
    assert "self-signed" in info.value.message
    assert "OME_CA_BUNDLE" in info.value.hint and "OME_VERIFY_SSL=false" in info.value.hint


def test_self_signed_certificate_is_accepted_with_the_ca_bundle(https_server):
    url, ca = https_server
    c = HttpClient(url, TLSConfig(ca_bundle=ca), system="OME")
    assert c.get("/").json() == {"hello": "world"}


def test_verification_off_is_accepted_and_warned_once(https_server, caplog, monkeypatch):
    import lib.http

    monkeypatch.setattr(lib.http, "_warned", set())  # a fresh run
    url, _ = https_server
    c = HttpClient(url, TLSConfig(verify=False, env_prefix="IDRAC"), system="iDRAC")
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert c.get("/").status_code == 200
        HttpClient(url, TLSConfig(verify=False, env_prefix="IDRAC"), system="iDRAC").get("/")
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 1  # once per run and endpoint, not once per request
    assert "IDRAC_VERIFY_SSL=false" in warnings[0].getMessage()


def test_connection_refused_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound but never listening: the port stays ours and refuses
        port = sock.getsockname()[1]
        c = HttpClient(f"http://127.0.0.1:{port}", TLSConfig(), system="OME", retry=RetryPolicy(attempts=1))
        with pytest.raises(ConnectRefusedError) as info:
            c.get("/api")
    assert "refused" in info.value.message.lower()
    assert info.value.hint


def test_tls_reason_is_cut_cleanly_from_the_ssl_message():
    from lib.http import translate_exception

    exc = requests.exceptions.SSLError(
        "HTTPSConnectionPool(host='ome', port=443): Max retries exceeded (Caused by SSLError(SSLCertVerificationError("
        "1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate "
        "(_ssl.c:1006)')))"
    )
    error = translate_exception(exc, "https://ome:443/api", TLSConfig(env_prefix="OME"), "OME")
    assert (
        error.message
        == "TLS certificate verification failed for https://ome:443/api (unable to get local issuer certificate)."
    )
    assert "OME_CA_BUNDLE" in error.hint
