"""The HTTP layer every client builds on: one long-lived session per endpoint, TLS settings,
timeouts on every request, bounded retries for idempotent calls, and error translation.

Callers decide what an HTTP status means (`error_for_response` gives the common mapping);
this module only turns transport failures into lib.errors with a hint an operator can act on.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import tenacity
import urllib3
from requests.adapters import HTTPAdapter

from lib.errors import (
    AgentError,
    AuthError,
    ConnectivityError,
    ConnectRefusedError,
    DNSError,
    RemoteError,
    RequestTimeoutError,
    TLSError,
)
from lib.logs import redact

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class TLSConfig:
    verify: bool = True
    ca_bundle: str | None = None
    legacy: bool = False
    env_prefix: str = "OME"

    @property
    def requests_verify(self) -> bool | str:
        if not self.verify:
            return False
        return self.ca_bundle or True

    def ssl_context(self) -> ssl.SSLContext:
        """An ssl context with the same policy, for clients that do not use requests (pyVmomi)."""
        ctx = (
            ssl.create_default_context(cafile=self.ca_bundle)
            if self.verify
            else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        )
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            warn_unverified(self.env_prefix)
        if self.legacy:
            _make_legacy(ctx)
        return ctx


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    max_seconds: float = 30.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 502, 503, 504}))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins when it asks for longer."""
        backoff = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        jittered = random.uniform(backoff / 2, backoff)
        if retry_after is not None:
            return min(max(retry_after, jittered), self.max_seconds)
        return jittered


NO_RETRY = RetryPolicy(attempts=1)

_warned_lock = threading.Lock()
_warned: set[str] = set()


def warn_unverified(env_prefix: str) -> None:
    """One warning line per run and endpoint, never one per request."""
    with _warned_lock:
        if env_prefix in _warned:
            return
        _warned.add(env_prefix)
    log.warning(
        "TLS certificate verification is OFF for %s (%s_VERIFY_SSL=false): the connection can be "
        "intercepted. Prefer %s_CA_BUNDLE.",
        env_prefix,
        env_prefix,
        env_prefix,
    )


def _make_legacy(ctx: ssl.SSLContext) -> None:
    # Old iDRAC 8 firmware offers only ciphers and key sizes OpenSSL 3 refuses at level 2.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    if hasattr(ssl, "OP_LEGACY_SERVER_CONNECT"):
        ctx.options |= ssl.OP_LEGACY_SERVER_CONNECT


class _LegacyTLSAdapter(HTTPAdapter):
    def __init__(self, tls: TLSConfig, **kwargs: Any) -> None:
        self._tls = tls
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        ctx = ssl.create_default_context(cafile=self._tls.ca_bundle)
        if not self._tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _make_legacy(ctx)
        kwargs["ssl_context"] = ctx
        super().init_poolmanager(*args, **kwargs)


def new_session(tls: TLSConfig, *, pool_size: int = 10) -> requests.Session:
    session = requests.Session()
    session.verify = tls.requests_verify
    session.trust_env = False  # an operator's proxy variables must not reroute datacenter traffic
    adapter: HTTPAdapter = (
        _LegacyTLSAdapter(tls, pool_connections=pool_size, pool_maxsize=pool_size)
        if tls.legacy
        else HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    )
    session.mount("https://", adapter)
    session.mount("http://", HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size))
    if not tls.verify:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        warn_unverified(tls.env_prefix)
    return session


def retry_after_seconds(resp: requests.Response | None) -> float | None:
    """Seconds a Retry-After header asks to wait: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
    None when there is no answer, no header, or a value that is neither."""
    value = resp.headers.get("Retry-After") if resp is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # garbage: ignore the header rather than fail the call
        return None
    return max(0.0, parsed.timestamp() - time.time())


_retry_after_seconds = retry_after_seconds  # the former private name, for old callers


def _reason_text(exc: BaseException) -> str:
    text = str(exc)
    for cause in (getattr(exc, "__cause__", None), getattr(exc, "__context__", None)):
        if cause is not None:
            text += " " + str(cause)
    return text


_VERIFY_REASON_RE = re.compile(r"certificate verify failed: ([^()]+)")

# Which setting names the address of each endpoint, for hints.
_HOST_SETTING = {"SUPABASE": "SUPABASE_URL", "IDRAC": "the server's iDRAC address in DSM"}


def translate_exception(exc: requests.RequestException, url: str, tls: TLSConfig, system: str) -> AgentError:
    """One place that turns requests/urllib3/ssl failures into errors an operator can act on."""
    where = redact(url.split("?", 1)[0])
    p = tls.env_prefix
    host_var = _HOST_SETTING.get(p, f"{p}_HOST")
    reason = _reason_text(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        if "self-signed" in reason or "self signed" in reason:
            detail = "self-signed certificate"
        elif "CERTIFICATE_VERIFY_FAILED" in reason:
            found = _VERIFY_REASON_RE.search(reason)
            detail = found.group(1).strip() if found else "untrusted certificate"
        else:
            legacy = "; for old iDRAC 8 firmware set IDRAC_LEGACY_TLS=true." if p == "IDRAC" else "."
            return TLSError(
                f"TLS handshake with {system} at {where} failed.",
                hint=f"Check that {system} speaks HTTPS on that port{legacy}",
            )
        return TLSError(
            f"TLS certificate verification failed for {where} ({detail}).",
            hint=f"Set {p}_CA_BUNDLE to your CA file, or {p}_VERIFY_SSL=false to skip verification.",
        )
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout):
        kind = "connect" if isinstance(exc, requests.exceptions.ConnectTimeout) else "read"
        return RequestTimeoutError(
            f"{system} at {where} did not answer in time ({kind} timeout).",
            hint=f"Check that {system} is up and reachable from this machine; it may be overloaded.",
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        low = reason.lower()
        if "name or service not known" in low or "nodename nor servname" in low or "getaddrinfo" in low:
            return DNSError(
                f"Cannot resolve the host name of {system} ({where}).",
                hint=f"Check {host_var}: the name does not resolve here; use an IP address or fix DNS.",
            )
        if "refused" in low:
            return ConnectRefusedError(
                f"Connection refused by {system} at {where}.",
                hint=f"Nothing listens there: check {host_var} and the port, and that {system} is running.",
            )
        return ConnectivityError(
            f"Cannot connect to {system} at {where}: {redact(reason)[:200]}",
            hint=f"Check {host_var}, the port, routing and firewalls between this machine and {system}.",
        )
    return ConnectivityError(f"Request to {system} at {where} failed: {redact(reason)[:200]}")


def _is_transient(exc: BaseException) -> bool:
    # A certificate problem does not heal by retrying; refused, DNS and timeouts may.
    return isinstance(exc, ConnectivityError) and not isinstance(exc, TLSError)


def _wait_for(policy: RetryPolicy) -> Any:
    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        retry_after = None
        if outcome is not None and not outcome.failed:
            retry_after = retry_after_seconds(outcome.result())
        return policy.delay(state.attempt_number, retry_after)

    return wait


def _stop_before_deadline(policy: RetryPolicy) -> Any:
    """Stop when the next wait would end past the policy's time budget."""

    def stop(state: tenacity.RetryCallState) -> bool:
        upcoming = state.upcoming_sleep or 0.0
        return state.seconds_since_start + upcoming > policy.max_seconds

    return stop


def _log_retry(state: tenacity.RetryCallState, method: str, url: str, policy: RetryPolicy) -> None:
    outcome = state.outcome
    why = str(outcome.exception()) if outcome and outcome.failed else f"HTTP {outcome.result().status_code}"
    log.info(
        "%s %s: %s, retrying in %.1f s (attempt %d of %d)",
        method,
        redact(url.split("?", 1)[0]),
        why,
        state.upcoming_sleep or 0.0,
        state.attempt_number + 1,
        policy.attempts,
    )


def _give_up(state: tenacity.RetryCallState) -> requests.Response:
    """Out of attempts: hand back the last answer, or raise the last translated error."""
    assert state.outcome is not None
    return state.outcome.result()


class HttpClient:
    """One endpoint, one long-lived session; every call goes through `request`."""

    def __init__(
        self,
        base_url: str,
        tls: TLSConfig,
        *,
        system: str,
        timeout: tuple[float, float] = (5.0, 60.0),
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        pool_size: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._sleep = sleep
        self.tls = tls
        self.system = system
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = new_session(tls, pool_size=pool_size)
        if headers:
            self.session.headers.update(headers)
        self.requests_sent = 0

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        idempotent: bool | None = None,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        method = method.upper()
        url = self.url(path_or_url)
        policy = retry or self.retry
        if not (idempotent if idempotent is not None else method in IDEMPOTENT_METHODS):
            policy = NO_RETRY
        kwargs.setdefault("timeout", self.timeout)

        def attempt() -> requests.Response:
            try:
                return self._send(method, url, **kwargs)
            except requests.RequestException as exc:
                raise translate_exception(exc, url, self.tls, self.system) from None

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts) | _stop_before_deadline(policy),
            wait=_wait_for(policy),
            retry=(
                tenacity.retry_if_exception(_is_transient)
                | tenacity.retry_if_result(lambda r: r.status_code in policy.statuses)
            ),
            before_sleep=lambda state: _log_retry(state, method, url, policy),
            retry_error_callback=_give_up,
            sleep=self._sleep,
        )
        return retrying(attempt)

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.requests_sent += 1
        return self.session.request(method, url, **kwargs)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_message(resp: requests.Response) -> tuple[str | None, str | None]:
    """(vendor code, message) from the common error bodies: PostgREST, Supabase, Redfish, OME."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return None, (redact(text[:300]) if text else None)
    if not isinstance(body, dict):
        return None, redact(str(body)[:300])
    err = body.get("error")
    if isinstance(
        err, dict
    ):  # Redfish and OME: {"error": {"code", "message", "@Message.ExtendedInfo": [...]}}
        infos = err.get("@Message.ExtendedInfo") or []
        if infos and isinstance(infos, list) and isinstance(infos[0], dict):
            first = infos[0]
            code = first.get("MessageId") or first.get("MessageID") or err.get("code")
            if isinstance(code, str) and "." in code:
                code = code.rsplit(".", 1)[-1]
            return code, redact(str(first.get("Message") or err.get("message") or ""))
        return err.get("code"), redact(str(err.get("message") or ""))
    message = body.get("message") or body.get("error_description") or body.get("msg") or err
    code = body.get("code") or body.get("error_code")
    return (str(code) if code is not None else None), (redact(str(message)) if message else None)


def error_for_response(resp: requests.Response, *, system: str, auth_hint: str | None = None) -> AgentError:
    code, message = remote_message(resp)
    where = redact(resp.url.split("?", 1)[0]) if resp.url else system
    text = f"{system} answered HTTP {resp.status_code}" + (f": {message}" if message else "") + f" ({where})"
    if resp.status_code in (401, 403):
        return AuthError(text, hint=auth_hint)
    return RemoteError(text, status=resp.status_code, code=code, remote_message=message)


def raise_for_status(resp: requests.Response, *, system: str, auth_hint: str | None = None) -> None:
    if resp.status_code >= 400:
        raise error_for_response(resp, system=system, auth_hint=auth_hint)
