"""Throw-away TLS material for the lab stand-ins and the tests: one helper, written to a folder.

Two shapes, both for 127.0.0.1 and localhost only:

- ``make_tls(folder)``: a private CA and a server certificate signed by it (what a site with its own
  CA deploys). Clients trust it through ``ca_file``; ``cert_file`` is the leaf.
- ``make_tls(folder, self_signed=True)``: one self-signed certificate (what appliances ship);
  ``ca_file`` is the certificate itself, so handing it to a client as a CA bundle trusts it.

Keys are P-256 (fast to make) and never leave the folder; remove the folder when done.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files in one folder. ``ca_file`` is what a client trusts."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext a server wraps its socket with."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


def make_tls(
    folder: Path | str,
    *,
    name: str = "DSM lab",
    common_name: str | None = None,
    self_signed: bool = False,
    hosts: tuple[str, ...] = HOSTS,
    days: int = 2,
) -> TLSFiles:
    """Write a certificate for `hosts` (IP addresses or DNS names) and its key into `folder`.

    `name` prefixes the file names and the CA's common name, so several sets can share a folder.
    The subject's common name defaults to the first host (clients match on the SAN list anyway).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.lower().replace(" ", "-")
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or hosts[0])])
    if self_signed:
        # One certificate that is its own issuer; CA:true so OpenSSL accepts it as a trust anchor.
        issuer_name, issuer_key = subject, key
        ca = None
    else:
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(issuer_name)
            .issuer_name(issuer_name)
            .public_key(issuer_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=self_signed, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if not self_signed:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    leaf = builder.sign(issuer_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    cert_file = folder / f"{stem}-cert.pem"
    key_file = folder / f"{stem}-key.pem"
    cert_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    if ca is None:
        return TLSFiles(ca_file=cert_file, cert_file=cert_file, key_file=key_file)
    ca_file = folder / f"{stem}-ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    return TLSFiles(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
