"""The probes `--check` shares on all three programs: DNS, TCP, TLS, the DSM backend, migrations.

Each probe returns a one-line detail when it passes and raises an AgentError with a hint when it
does not: exactly what `lib.sync.common.Checklist.run(name, probe)` prints as an OK or FAIL line.
`endpoint_checks` runs DNS -> TCP -> TLS for one endpoint and skips the rest after a failure, so
an operator sees the first thing to fix, not three consequences of it.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from lib.config import DsmSettings
from lib.errors import (
    AgentError,
    AuthError,
    ConfigError,
    ConnectivityError,
    ConnectRefusedError,
    DNSError,
    RequestTimeoutError,
    TLSError,
)
from lib.http import TLSConfig, translate_exception

Resolver = Callable[..., list[Any]]


@dataclass(frozen=True)
class Endpoint:
    """Where a program connects, and the names an operator needs in a hint."""

    host: str
    port: int
    setting: str  # the variable that names the address: OME_HOST, SUPABASE_URL, VCENTER_HOST
    system: str  # "OME", "the DSM backend", "vCenter"
    tls: TLSConfig | None  # None: plain http (no TLS line)

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, *, setting: str, system: str, tls: TLSConfig) -> Endpoint:
        """An http(s) URL, or a bare host / host:port (taken as https)."""
        text = url.strip()
        if "://" not in text:
            if text.count(":") > 1 and not text.startswith("["):
                text = f"[{text}]"  # a bare IPv6 address
            text = "https://" + text
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{setting}: {url!r} has an invalid port.") from None
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ConfigError(f"{setting}: {url!r} is not a host name, address or http(s) URL.")
        https = parts.scheme == "https"
        return cls(parts.hostname, port or (443 if https else 80), setting, system, tls if https else None)


def dns_check(ep: Endpoint, *, resolve: Resolver = socket.getaddrinfo) -> str:
    try:
        infos = resolve(ep.host, ep.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DNSError(
            f"Cannot resolve {ep.host!r} ({ep.system}): {exc.strerror or exc}.",
            hint=f"Check {ep.setting}: the name does not resolve here; use an IP address or fix DNS.",
        ) from None
    addresses = sorted({info[4][0] for info in infos})
    return f"{ep.host} -> {', '.join(addresses[:4])}"


def tcp_check(ep: Endpoint, *, timeout: float = 5.0) -> str:
    started = time.monotonic()
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        raise ConnectRefusedError(
            f"Connection refused by {ep.system} at {ep.where}.",
            hint=f"Nothing listens there: check {ep.setting} and the port, and that {ep.system} is running.",
        ) from None
    except TimeoutError:
        raise RequestTimeoutError(
            f"{ep.system} at {ep.where} did not accept a connection within {timeout:g} s.",
            hint=f"Check {ep.setting}, the port and the firewalls between this machine and {ep.system}.",
        ) from None
    except socket.gaierror:
        raise DNSError(f"Cannot resolve {ep.host!r}.", hint=f"Check {ep.setting}.") from None
    except OSError as exc:
        raise ConnectivityError(
            f"Cannot connect to {ep.system} at {ep.where}: {exc.strerror or exc}.",
            hint=f"Check {ep.setting}, the port, routing and firewalls.",
        ) from None
    return f"{ep.where} accepts connections ({(time.monotonic() - started) * 1000:.0f} ms)"


def tls_check(
    ep: Endpoint, *, timeout: float = 5.0, untrusted: Callable[[str], AgentError] | None = None
) -> str:
    """A handshake with the program's own TLS settings (CA bundle, verify flag, legacy ciphers).
    `untrusted`, when given, builds the error for a certificate that fails verification from the
    reason (lib/vsphere names the certificate's subject in it)."""
    if ep.tls is None:
        return "plain http: no TLS (acceptable for a local test backend only)"
    tls = ep.tls
    try:
        with (
            socket.create_connection((ep.host, ep.port), timeout=timeout) as sock,
            tls.ssl_context().wrap_socket(sock, server_hostname=ep.host) as conn,
        ):
            version = conn.version()
            cert = conn.getpeercert() if tls.verify else None
    except (ssl.SSLError, ssl.CertificateError) as exc:
        if untrusted is not None and isinstance(exc, ssl.SSLCertVerificationError):
            raise untrusted(exc.verify_message or str(exc)) from None
        # the same message and hint as a real request would give (lib.http has the one wording)
        reason: object = exc
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
            reason = f"certificate verify failed: {exc.verify_message})"
        raise translate_exception(
            requests.exceptions.SSLError(reason), f"https://{ep.where}/", tls, ep.system
        ) from None
    except OSError as exc:
        raise TLSError(
            f"TLS handshake with {ep.system} at {ep.where} failed: {exc.strerror or exc}.",
            hint=f"Check that {ep.setting} points at the HTTPS port of {ep.system}.",
        ) from None
    if not tls.verify:
        return f"{version}; certificate NOT verified ({tls.env_prefix}_VERIFY_SSL=false)"
    subject = dict(x[0] for x in (cert or {}).get("subject", ()) if x)
    trusted = f"trusted via {tls.env_prefix}_CA_BUNDLE" if tls.ca_bundle else "trusted by the system CAs"
    expires = (cert or {}).get("notAfter", "?")
    return f"{version}; certificate CN={subject.get('commonName', '?')} {trusted}, valid until {expires}"


def endpoint_checks(checks: Any, ep: Endpoint, label: str) -> bool:
    """DNS, TCP and TLS lines for one endpoint on a Checklist; the later ones are skipped after a failure."""
    steps: list[tuple[str, Callable[[], str]]] = [
        (f"{label} DNS", lambda: dns_check(ep)),
        (f"{label} TCP", lambda: tcp_check(ep)),
    ]
    if ep.tls is not None:
        steps.append((f"{label} TLS", lambda: tls_check(ep)))
    for i, (name, probe) in enumerate(steps):
        if not checks.run(name, probe):
            for later, _ in steps[i + 1 :]:
                checks.skip(later, f"{name} failed")
            return False
    return True


def endpoint_rows(ep: Endpoint, label: str) -> list[tuple[str, bool, str]]:
    """The same probes as (name, ok, detail) rows, for job-executor.py --check's table."""
    rows: list[tuple[str, bool, str]] = []
    steps: list[tuple[str, Callable[[], str]]] = [
        (f"{label} DNS", lambda: dns_check(ep)),
        (f"{label} TCP", lambda: tcp_check(ep)),
    ]
    if ep.tls is not None:
        steps.append((f"{label} TLS", lambda: tls_check(ep)))
    for name, probe in steps:
        try:
            rows.append((name, True, probe()))
        except AgentError as exc:
            rows.append((name, False, f"{exc.message} hint: {exc.hint}" if exc.hint else exc.message))
            break
    return rows


def backend_endpoint(dsm: DsmSettings) -> Endpoint:
    url = dsm.supabase_url or dsm.edge_function_url or ""
    setting = "SUPABASE_URL" if dsm.supabase_url else "DSM_EDGE_FUNCTION_URL"
    return Endpoint.from_url(url, setting=setting, system="the DSM backend", tls=dsm.tls)


def backend_check(dsm: DsmSettings, *, key: str | None = None) -> str:
    """SUPABASE_URL answers as a Supabase project and accepts `key` (default: the service-role key,
    else the anon key). Asks the gateway-checked /auth/v1/health only; reads and writes no data."""
    from lib.http import NO_RETRY, HttpClient, error_for_response

    key = key or dsm.service_role_key or dsm.anon_key
    if not dsm.supabase_url:
        raise ConfigError("SUPABASE_URL is not set.")
    if not key:
        raise ConfigError(
            "No key to check: set SUPABASE_SERVICE_ROLE_KEY (executor) or SUPABASE_ANON_KEY (syncs)."
        )
    which = {dsm.service_role_key: "service-role", dsm.anon_key: "anon"}.get(key, "given")
    with HttpClient(
        dsm.supabase_url, dsm.tls, system="the DSM backend", timeout=(5.0, 15.0), retry=NO_RETRY
    ) as http:
        resp = http.get("/auth/v1/health", headers={"apikey": key, "Authorization": f"Bearer {key}"})
    if resp.status_code in (401, 403):
        raise AuthError(
            f"The DSM backend refused the {which} key (HTTP {resp.status_code}).",
            hint=f"Copy the {which} key again from the Supabase project settings (API).",
        )
    if resp.status_code == 404:
        raise ConnectivityError(
            f"{dsm.supabase_url} answered 404 for /auth/v1/health: not a Supabase project URL.",
            hint="Set SUPABASE_URL to the project URL, e.g. https://<ref>.supabase.co (no path).",
        )
    if resp.status_code >= 400:
        raise error_for_response(resp, system="the DSM backend")
    return f"{dsm.supabase_url} answers; {which} key accepted"


def migrations_check(rest: Any) -> str:
    """What the executor needs in the database (supabase/migrations): its functions and columns.
    `rest` is a lib.dsm.rest.RestClient with the service-role key; uses the executor's own test."""
    from lib.executor.store import MIGRATION_FILE, SCHEMA_VERSION, JobStore

    version = JobStore(rest, "check", lease_seconds=60).schema_version()
    if version is None or version < SCHEMA_VERSION:
        raise ConfigError(
            f"The executor's database functions are missing (schema version {version}, need {SCHEMA_VERSION}).",
            hint=f"Apply supabase/migrations/0001_dsm_schema.sql and {MIGRATION_FILE} to the DSM database.",
        )
    rest.select("jobs", columns="id,executor_id,claim_token,lease_expires_at", limit=1)
    rest.select("executor_heartbeats", columns="executor_id", limit=1)
    return f"schema version {version}"
