"""lab/tls.py: the one certificate helper. A real TLS handshake on 127.0.0.1 trusts the material
exactly through its ca_file, for both the private-CA and the self-signed shape."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from lab.tls import make_tls


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> dict:
    """One handshake against a one-shot loopback server; returns the peer certificate."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as sock,
            client_ctx.wrap_socket(sock, server_hostname=host) as tls,
        ):
            return tls.getpeercert()
    finally:
        t.join(5)
        listener.close()


@pytest.mark.parametrize("self_signed", [False, True])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_trusted_through_its_ca_file_only(tmp_path, self_signed, host):
    files = make_tls(tmp_path, name="unit", self_signed=self_signed)
    assert files.key_file.stat().st_mode & 0o077 == 0  # the key is private to its owner
    trusting = ssl.create_default_context(cafile=str(files.ca_file))
    cert = _handshake(files.server_context(), trusting, host)
    assert dict(x[0] for x in cert["subject"])["commonName"] == "localhost"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files.server_context(), ssl.create_default_context(), host)


def test_private_ca_signs_a_leaf_that_is_not_itself_a_ca(tmp_path):
    files = make_tls(tmp_path, name="unit")
    assert files.ca_file != files.cert_file
    leaf_only = ssl.create_default_context(cafile=str(files.cert_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files.server_context(), leaf_only, "127.0.0.1")


def test_another_host_name_is_refused(tmp_path):
    files = make_tls(tmp_path, name="unit", hosts=("127.0.0.1",))
    trusting = ssl.create_default_context(cafile=str(files.ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(files.server_context(), trusting, "localhost")
