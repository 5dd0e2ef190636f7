"""The one client for Redfish services (Dell iDRAC first, any standard BMC too).

Shaped after OpenStack sushy: every verb goes through `RedfishClient._request`; authentication is
a separate object (`SessionAuth`) with login and logout; which answers are worth retrying is data
(`RETRYABLE_CODES`, `RETRYABLE_STATUSES`) plus one predicate (`retry_reason`); an HTTP answer becomes
a typed error in one function (`error_for`).

Use it as a context manager so the session is always closed::

    with RedfishClient(server.ip_address, creds.username, creds.password, tls=tls, audit=cb) as bmc:
        bmc.reset("GracefulShutdown")

Entering takes the per-BMC lock (one session per BMC at a time in this process), reads the service
root and logs in: a Redfish session (`X-Auth-Token`), or HTTP Basic per request where the service
has no SessionService or refuses session creation (405). Resource paths are discovered from the
Systems, Managers and Chassis collections; actions from their `target`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from lib.errors import AgentError, AuthError, ConnectivityError, ConnectRefusedError, RemoteError, TLSError
from lib.http import NO_RETRY, HttpClient, RetryPolicy, TLSConfig, retry_after_seconds
from lib.logs import redact, register_secret

log = logging.getLogger(__name__)

SERVICE_ROOT = "/redfish/v1/"

# Vendor message ids that mean "busy, nothing was done, ask again later" (safe to retry any verb).
RETRYABLE_CODES: dict[str, str] = {
    "RAC0218": "the maximum number of user sessions is reached",
    "SYS518": "the iDRAC's data sources are unavailable (busy or starting)",
    "SWC0700": "the iDRAC is not ready",
}
# Statuses worth retrying for idempotent verbs only (a POST may have been acted upon).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "PUT"})
# A 409 from a reset with one of these ids means the system already is in the requested state.
ALREADY_IN_STATE_CODES = frozenset({"PSU501", "PSU502"})

BUSY_RETRY = RetryPolicy(attempts=8, max_seconds=60.0, backoff_base=1.0, backoff_max=8.0)

HINTS = {
    "auth": (
        "Check the iDRAC user name and password of this server (its credential set, its own "
        "credentials or the IP-range match). Repeated failures make iDRAC block this address for a while."
    ),
    "RAC0218": (
        "The iDRAC's session limit is used up by other clients: close idle sessions (iDRAC UI > "
        "Sessions, or `racadm closessn`) or wait for them to time out, then retry."
    ),
    "busy": (
        "The iDRAC is busy or restarting: wait a few minutes and retry. If it persists, reset the "
        "iDRAC (`racadm racreset`)."
    ),
    "not_allowed": "Choose one of the values the BMC lists as allowed for this action.",
    "missing": "This BMC does not offer the resource: check its firmware version and Redfish support.",
    "default": "See the BMC's message; its Lifecycle log (iDRAC UI > Maintenance) has details.",
}


@dataclass(frozen=True)
class RedfishCall:
    """One HTTP exchange with a BMC, for the audit trail. Never a body, never a secret."""

    address: str
    method: str
    path: str
    status: int | None
    duration_ms: int
    success: bool
    error: str | None = None
    url: str = ""


AuditFn = Callable[[RedfishCall], None]


@dataclass(frozen=True)
class ExtendedInfo:
    message_id: str | None
    message: str | None
    resolution: str | None

    @property
    def code(self) -> str | None:
        """The short vendor code: IDRAC.2.9.RAC0218 -> RAC0218, Base.1.12.AccessDenied -> AccessDenied."""
        return self.message_id.rsplit(".", 1)[-1] if self.message_id else None


def extended_info(resp: requests.Response) -> ExtendedInfo:
    """The first @Message.ExtendedInfo entry of a Redfish error body (or the error's message)."""
    try:
        body = resp.json()
    except ValueError:
        return ExtendedInfo(None, redact(resp.text[:200]) if resp.text else None, None)
    err = body.get("error", body) if isinstance(body, dict) else {}
    infos = err.get("@Message.ExtendedInfo") if isinstance(err, dict) else None
    if isinstance(infos, list) and infos and isinstance(infos[0], dict):
        first = infos[0]
        return ExtendedInfo(
            first.get("MessageId") or first.get("MessageID"),
            redact(str(first.get("Message") or "")) or None,
            first.get("Resolution"),
        )
    if isinstance(err, dict):
        return ExtendedInfo(err.get("code"), redact(str(err.get("message") or "")) or None, None)
    return ExtendedInfo(None, None, None)


def retry_reason(method: str, status: int | None, code: str | None, exc: BaseException | None) -> str | None:
    """The ONE retry predicate: why this answer is worth asking again, or None."""
    if code in RETRYABLE_CODES:
        return f"{code}: {RETRYABLE_CODES[code]}"
    if isinstance(exc, ConnectRefusedError):
        return str(exc)  # never reached the BMC (e.g. it is rebooting): safe for any verb
    if method in IDEMPOTENT:
        if status in RETRYABLE_STATUSES:
            return f"HTTP {status}"
        if isinstance(exc, ConnectivityError) and not isinstance(exc, TLSError):
            return str(exc)
    return None


class RedfishError(RemoteError):
    """The BMC answered with an error; carries its message id and resolution."""

    def __init__(self, message: str, *, hint: str | None, status: int, info: ExtendedInfo) -> None:
        super().__init__(message, hint=hint, status=status, code=info.code, remote_message=info.message)
        self.info = info


def error_for(resp: requests.Response, address: str, what: str) -> AgentError:
    """Turn a failed Redfish answer into a typed error with the BMC's own message and a hint."""
    info = extended_info(resp)
    said = f": {info.message}" if info.message else ""
    text = f"iDRAC {address}: {what} failed with HTTP {resp.status_code}{said}"
    if info.code:
        text += f" [{info.code}]"
    if resp.status_code in (401, 403):
        return AuthError(text, hint=HINTS["auth"])
    if info.code == "RAC0218":
        hint = HINTS["RAC0218"]
    elif info.code in RETRYABLE_CODES or resp.status_code in RETRYABLE_STATUSES:
        hint = HINTS["busy"]
    elif info.code in ("PropertyValueNotInList", "ActionParameterValueNotInList"):
        hint = HINTS["not_allowed"]
    elif resp.status_code == 404:
        hint = HINTS["missing"]
    else:
        hint = info.resolution or HINTS["default"]
    return RedfishError(text, hint=hint, status=resp.status_code, info=info)


def split_address(address: str) -> tuple[str, str]:
    """`servers.ip_address` -> (scheme, netloc). Accepts host, host:port, [v6]:port, bare v6, or a URL."""
    address = address.strip().rstrip("/")
    scheme = "https"
    if "://" in address:
        scheme, address = address.split("://", 1)
        address = address.split("/", 1)[0]
    if address.count(":") > 1 and not address.startswith("["):
        address = f"[{address}]"  # a bare IPv6 address has no port
    return scheme, address


# ---- one session per BMC at a time, across the whole executor process ----------------------
_bmc_locks_guard = threading.Lock()
_bmc_locks: dict[str, threading.Lock] = {}


@contextmanager
def bmc_lock(address: str, timeout: float) -> Iterator[None]:
    """Serialize sessions to one BMC. Raises RemoteError when another operation holds it too long."""
    key = split_address(address)[1].lower()
    with _bmc_locks_guard:
        lock = _bmc_locks.setdefault(key, threading.Lock())
    if not lock.acquire(timeout=timeout):
        raise RemoteError(
            f"iDRAC {address}: another operation of this executor kept its session for over {timeout:.0f} s",
            hint="Wait for the other job on this server to finish, then retry.",
        )
    try:
        yield
    finally:
        lock.release()


class SessionAuth:
    """Session login with Basic fallback; `mode` is "auto" (session, else Basic), "session" or "basic"."""

    def __init__(self, username: str, password: str, mode: str = "auto") -> None:
        if mode not in ("auto", "session", "basic"):
            raise ValueError(f"auth mode {mode!r}")
        self.username = username
        self._password = password
        self.mode = mode
        self.token: str | None = None
        self.session_uri: str | None = None
        self.basic = mode == "basic"
        register_secret(password)

    def __repr__(self) -> str:
        return f"SessionAuth(user={self.username!r}, basic={self.basic}, session={self.session_uri!r})"

    def apply(self, kwargs: dict[str, Any]) -> None:
        """Add this auth to one request's keyword arguments."""
        if self.token:
            kwargs.setdefault("headers", {})["X-Auth-Token"] = self.token
        elif self.basic:
            kwargs["auth"] = (self.username, self._password)

    @property
    def can_reauth(self) -> bool:
        return not self.basic

    def login(self, client: RedfishClient) -> None:
        if self.basic:
            return
        uri = client.sessions_uri()
        if uri is None:
            return self._fallback(client, "the service has no SessionService")
        body = {"UserName": self.username, "Password": self._password}
        resp = client._request("POST", uri, json=body, authenticated=False, what="login")
        if resp.status_code == 405 and self.mode == "auto":
            return self._fallback(client, "session creation is not allowed (HTTP 405)")
        if resp.status_code >= 400:
            raise error_for(resp, client.address, f"login as {self.username}")
        token = resp.headers.get("X-Auth-Token")
        if not token:
            raise RemoteError(
                f"iDRAC {client.address}: the session answer carried no X-Auth-Token",
                hint="Set the auth mode to basic for this BMC.",
            )
        register_secret(token)
        self.token = token
        location = resp.headers.get("Location")
        if not location:
            try:
                location = resp.json().get("@odata.id")
            except ValueError:
                location = None
        self.session_uri = location

    def _fallback(self, client: RedfishClient, why: str) -> None:
        if self.mode == "session":
            raise RemoteError(f"iDRAC {client.address}: {why}", hint="Allow Redfish sessions on the BMC.")
        log.info("iDRAC %s: %s; using HTTP Basic auth per request", client.address, why)
        self.basic = True

    def logout(self, client: RedfishClient) -> None:
        """Delete the session; never raises (a failed logout must not hide the job's own error)."""
        token, uri = self.token, self.session_uri
        if not token:
            return
        try:
            if uri:
                resp = client._request("DELETE", uri, what="logout", reauth=False)
                if resp.status_code >= 400 and resp.status_code != 401:
                    log.warning("iDRAC %s: logout answered HTTP %s", client.address, resp.status_code)
        except AgentError as exc:
            log.warning("iDRAC %s: logout failed: %s", client.address, exc)
        finally:
            self.token = None
            self.session_uri = None

    def relogin(self, client: RedfishClient) -> None:
        """Our token was refused (HTTP 401). The session may still be open on the BMC (iDRAC
        answers 401 under load too) and count against its small session limit (RAC0218): delete
        it with the old token first, best effort (a 401/404 there just means it is gone), then
        log in again."""
        self.logout(client)
        self.login(client)

    def forget(self) -> None:
        """The BMC dropped our session (reboot, timeout): nothing to delete."""
        self.token = None
        self.session_uri = None


@dataclass(frozen=True)
class Component:
    kind: str  # fan, temperature, power_supply, storage, processor, memory
    name: str
    health: str | None
    state: str | None = None


@dataclass
class HealthReport:
    health: str | None
    health_rollup: str | None
    power_state: str | None
    components: list[Component] = field(default_factory=list)

    @property
    def problems(self) -> list[Component]:
        """Components that are enabled and not OK (absent parts are not problems)."""
        return [
            c
            for c in self.components
            if c.health not in (None, "OK") and c.state not in ("Absent", "Disabled")
        ]

    @property
    def overall(self) -> str:
        """The value for servers.overall_health: the rollup when given, else the worst seen."""
        order = {"OK": 0, "Warning": 1, "Critical": 2}
        seen = [h for h in (self.health_rollup, self.health) if h] + [
            c.health for c in self.problems if c.health
        ]
        return max(seen, key=lambda h: order.get(h, 1), default="Unknown")


class RedfishClient:
    """A connection to one BMC. Not shared between threads: one client per task."""

    def __init__(
        self,
        address: str,
        username: str,
        password: str,
        *,
        tls: TLSConfig | None = None,
        timeout: float = 30.0,
        audit: AuditFn | None = None,
        auth_mode: str = "auto",
        busy_retry: RetryPolicy = BUSY_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        lock_timeout: float = 900.0,
    ) -> None:
        self.address = address
        scheme, netloc = split_address(address)
        self.base_url = f"{scheme}://{netloc}"
        self.tls = tls or TLSConfig(env_prefix="IDRAC")
        self.http = HttpClient(
            self.base_url,
            self.tls,
            system=f"iDRAC {address}",
            timeout=(min(10.0, timeout), timeout),
            retry=NO_RETRY,
            pool_size=2,
        )
        self.auth = SessionAuth(username, password, auth_mode)
        self.audit = audit
        self.busy_retry = busy_retry
        self.sleep = sleep
        self.lock_timeout = lock_timeout
        self._root: dict[str, Any] | None = None
        self._system_path: str | None = None
        self._lock_cm: Any = None
        self.calls = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> RedfishClient:
        self._lock_cm = bmc_lock(self.address, self.lock_timeout)
        self._lock_cm.__enter__()
        try:
            self.auth.login(self)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.auth.logout(self)
        finally:
            self._close()

    def _close(self) -> None:
        self.http.close()
        if self._lock_cm is not None:
            cm, self._lock_cm = self._lock_cm, None
            cm.__exit__(None, None, None)

    # ---- the one request path --------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        authenticated: bool = True,
        reauth: bool = True,
        what: str | None = None,
    ) -> requests.Response:
        """Send with auth, retry busy answers within the policy, re-authenticate once on 401.
        Returns the final response (any status); raises only for transport failures, and
        RemoteError for an absolute link that leaves the BMC (see `_on_bmc`)."""
        path = self._on_bmc(path)
        policy = self.busy_retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            resp, exc = self._send_once(method, path, json, authenticated)
            if resp is not None and resp.status_code == 401 and authenticated and reauth and self.auth.token:
                reauth = False  # only once per call: a second 401 is a real refusal
                log.info("iDRAC %s: session no longer valid (HTTP 401); logging in again", self.address)
                self.auth.relogin(self)
                continue
            code = extended_info(resp).code if resp is not None and resp.status_code >= 400 else None
            why = retry_reason(method, resp.status_code if resp is not None else None, code, exc)
            wait = policy.delay(attempt, retry_after_seconds(resp))
            if (
                why is None
                or attempt >= policy.attempts
                or time.monotonic() - started + wait > policy.max_seconds
            ):
                if exc is not None:
                    raise exc
                assert resp is not None
                return resp
            log.info(
                "iDRAC %s: %s %s: %s; retrying in %.1f s (attempt %d of %d)",
                self.address,
                method,
                path,
                why,
                wait,
                attempt + 1,
                policy.attempts,
            )
            self.sleep(wait)

    def _on_bmc(self, path: str) -> str:
        """A path, or a BMC-supplied absolute link (nextLink, registry Location, any @odata.id) as
        its path on this BMC. A link to any other scheme, host or port is refused: our session
        token or Basic password would be sent with it, and the audit row would hide where."""
        if not path.lower().startswith(("http://", "https://")):
            return path  # HttpClient prefixes anything else with base_url
        base = urlsplit(self.base_url)
        try:
            link = urlsplit(path)
            same = _origin(link) == _origin(base)
        except ValueError:  # e.g. a port that is not a number
            link, same = None, False
        if not same or link is None:
            where = (link.hostname if link is not None else None) or "an unparsable address"
            raise RemoteError(
                f"iDRAC {self.address}: a link the BMC returned leaves the BMC (to {where}); not followed",
                hint="The BMC's Redfish service points at another host: check its firmware or proxy setup.",
            )
        return (link.path or "/") + (f"?{link.query}" if link.query else "")

    def _send_once(
        self, method: str, path: str, body: Any, authenticated: bool
    ) -> tuple[requests.Response | None, AgentError | None]:
        kwargs: dict[str, Any] = {"headers": {"Accept": "application/json"}}
        if body is not None:
            kwargs["json"] = body
        if authenticated:
            self.auth.apply(kwargs)
        self.calls += 1
        t0 = time.monotonic()
        try:
            resp = self.http.request(method, path, retry=NO_RETRY, **kwargs)
        except AgentError as exc:
            self._audit(method, path, None, t0, str(exc))
            return None, exc
        err = None if resp.status_code < 400 else f"HTTP {resp.status_code} {extended_info(resp).code or ''}"
        self._audit(method, path, resp.status_code, t0, err)
        return resp, None

    def _audit(self, method: str, path: str, status: int | None, t0: float, error: str | None) -> None:
        if self.audit is None:
            return
        rel = path if path.startswith("/") else "/" + path.split("://", 1)[-1].split("/", 1)[-1]
        call = RedfishCall(
            address=self.address,
            method=method,
            path=rel.split("?", 1)[0],
            status=status,
            duration_ms=int((time.monotonic() - t0) * 1000),
            success=error is None,
            error=redact(error.strip())[:300] if error else None,
            url=self.base_url + rel.split("?", 1)[0],
        )
        try:
            self.audit(call)
        except Exception:  # the audit trail is best effort and must never break the operation
            log.debug("audit callback failed", exc_info=True)

    # ---- verbs -----------------------------------------------------------------------------
    def get(self, path: str, *, what: str | None = None) -> dict[str, Any]:
        resp = self._request("GET", path)
        if resp.status_code >= 400:
            raise error_for(resp, self.address, what or f"GET {path}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise RemoteError(f"iDRAC {self.address}: GET {path} did not answer JSON") from exc
        return body if isinstance(body, dict) else {}

    def post(self, path: str, body: Any, *, what: str | None = None) -> requests.Response:
        resp = self._request("POST", path, json=body)
        if resp.status_code >= 400:
            raise error_for(resp, self.address, what or f"POST {path}")
        return resp

    # ---- discovery -------------------------------------------------------------------------
    def root(self) -> dict[str, Any]:
        if self._root is None:
            resp = self._request("GET", SERVICE_ROOT, authenticated=False)
            if resp.status_code >= 400:
                raise error_for(resp, self.address, "reading the service root")
            self._root = resp.json()
        return self._root

    def sessions_uri(self) -> str | None:
        """Links.Sessions; else SessionService's Sessions; else /redfish/v1/Sessions before Redfish 1.6."""
        root = self.root()
        link = _odata_id((root.get("Links") or {}).get("Sessions"))
        if link:
            return link
        if root.get("SessionService"):
            return "/redfish/v1/SessionService/Sessions"
        if _version(root.get("RedfishVersion")) < (1, 6) and root.get("RedfishVersion"):
            return "/redfish/v1/Sessions"
        return None

    def members(self, collection: str) -> list[str]:
        body = self.get(collection, what=f"listing {collection}")
        return [m for m in (_odata_id(x) for x in body.get("Members") or []) if m]

    def _first_member(self, key: str) -> str:
        link = _odata_id(self.root().get(key))
        if not link:
            raise RemoteError(f"iDRAC {self.address}: the service root has no {key}", hint=HINTS["missing"])
        members = self.members(link)
        if not members:
            raise RemoteError(f"iDRAC {self.address}: the {key} collection is empty", hint=HINTS["busy"])
        return members[0]

    def system_path(self) -> str:
        if self._system_path is None:
            self._system_path = self._first_member("Systems")
        return self._system_path

    def manager_path(self) -> str:
        return self._first_member("Managers")

    def chassis_path(self, system: dict[str, Any] | None = None) -> str:
        linked = ((system or {}).get("Links") or {}).get("Chassis") or []
        return _odata_id(linked[0]) if linked and _odata_id(linked[0]) else self._first_member("Chassis")

    def system(self) -> dict[str, Any]:
        return self.get(self.system_path(), what="reading the system")

    def power_state(self) -> str | None:
        return self.system().get("PowerState")

    # ---- actions ---------------------------------------------------------------------------
    def action(self, resource: dict[str, Any], name: str, parameter: str) -> tuple[str, list[str] | None]:
        """(target, allowed values of `parameter`) of action `name` (e.g. "#ComputerSystem.Reset")."""
        act = (resource.get("Actions") or {}).get(name)
        if not isinstance(act, dict) or not act.get("target"):
            raise RemoteError(
                f"iDRAC {self.address}: the resource offers no {name} action", hint=HINTS["missing"]
            )
        allowed = act.get(f"{parameter}@Redfish.AllowableValues")
        info_uri = act.get("@Redfish.ActionInfo")
        if allowed is None and info_uri:
            params = self.get(info_uri, what=f"reading {name} ActionInfo").get("Parameters") or []
            allowed = next((p.get("AllowableValues") for p in params if p.get("Name") == parameter), None)
        return act["target"], list(allowed) if allowed is not None else None

    def reset(self, reset_type: str, system: dict[str, Any] | None = None) -> bool:
        """ComputerSystem.Reset. Returns False when the BMC says the system already is in that
        state (Dell 409 PSU501/PSU502), True when the reset was accepted."""
        system = system or self.system()
        target, allowed = self.action(system, "#ComputerSystem.Reset", "ResetType")
        if allowed is not None and reset_type not in allowed:
            raise RemoteError(
                f"iDRAC {self.address}: reset type {reset_type} is not allowed here (allowed: {', '.join(allowed)})",
                hint=HINTS["not_allowed"],
            )
        resp = self._request("POST", target, json={"ResetType": reset_type})
        if resp.status_code == 409 and extended_info(resp).code in ALREADY_IN_STATE_CODES:
            return False
        if resp.status_code >= 400:
            raise error_for(resp, self.address, f"reset {reset_type}")
        return True

    # ---- health ----------------------------------------------------------------------------
    def health(self) -> HealthReport:
        system = self.system()
        status = system.get("Status") or {}
        report = HealthReport(status.get("Health"), status.get("HealthRollup"), system.get("PowerState"))
        for key, kind in (("ProcessorSummary", "processor"), ("MemorySummary", "memory")):
            st = (system.get(key) or {}).get("Status") or {}
            if st:
                report.components.append(
                    Component(kind, key, st.get("HealthRollup") or st.get("Health"), st.get("State"))
                )
        chassis = self.get(self.chassis_path(system), what="reading the chassis")
        report.components += self._thermal(chassis) + self._power(chassis)
        report.components += self._storage(system)
        return report

    def _thermal(self, chassis: dict[str, Any]) -> list[Component]:
        out: list[Component] = []
        sub = _odata_id(chassis.get("ThermalSubsystem"))
        legacy = _odata_id(chassis.get("Thermal"))
        if legacy:
            body = self.get(legacy, what="reading Thermal")
            out += [_component("fan", f) for f in body.get("Fans") or []]
            out += [_component("temperature", t) for t in body.get("Temperatures") or []]
        elif sub:
            fans = _odata_id(self.get(sub, what="reading ThermalSubsystem").get("Fans"))
            out += [_component("fan", self.get(m)) for m in (self.members(fans) if fans else [])]
        return out

    def _power(self, chassis: dict[str, Any]) -> list[Component]:
        legacy = _odata_id(chassis.get("Power"))
        sub = _odata_id(chassis.get("PowerSubsystem"))
        if legacy:
            return [
                _component("power_supply", p)
                for p in self.get(legacy, what="reading Power").get("PowerSupplies") or []
            ]
        if sub:
            psus = _odata_id(self.get(sub, what="reading PowerSubsystem").get("PowerSupplies"))
            return [_component("power_supply", self.get(m)) for m in (self.members(psus) if psus else [])]
        return []

    def _storage(self, system: dict[str, Any]) -> list[Component]:
        link = _odata_id(system.get("Storage"))
        out: list[Component] = []
        for member in self.members(link) if link else []:
            body = self.get(member, what="reading storage")
            ctls = body.get("StorageControllers") or []
            if ctls:
                out += [_component("storage", c, fallback=body.get("Id")) for c in ctls]
            else:
                out.append(_component("storage", body))
        return out


def _component(kind: str, item: dict[str, Any], fallback: str | None = None) -> Component:
    st = item.get("Status") or {}
    name = item.get("Name") or item.get("MemberId") or item.get("Id") or fallback or kind
    return Component(kind, str(name), st.get("Health"), st.get("State"))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: Any) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a urlsplit result, the default port made explicit."""
    scheme = url.scheme.lower()
    return scheme, (url.hostname or "").lower(), url.port or _DEFAULT_PORTS.get(scheme)


def _odata_id(link: Any) -> str | None:
    return link.get("@odata.id") if isinstance(link, dict) else None


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (0,)


def tls_for(base: TLSConfig, requires_legacy_ssl: bool) -> TLSConfig:
    """The server's TLS: the configured policy, with legacy ciphers when the server row asks for them."""
    return dataclasses.replace(base, legacy=True) if requires_legacy_ssl and not base.legacy else base


def busy_policy(seconds: float) -> RetryPolicy:
    """BUSY_RETRY bounded by IDRAC_BUSY_RETRY_SECONDS (given by the caller, never read here)."""
    return dataclasses.replace(BUSY_RETRY, max_seconds=seconds)


def audit_to_context(ctx: Any, server_id: str | None) -> AuditFn:
    """An audit callback writing each call as an idrac_commands row through the job context."""

    def record(call: RedfishCall) -> None:
        ctx.audit(
            server_id=server_id,
            command_type=call.method,
            endpoint=call.path,
            full_url=call.url,
            status_code=call.status,
            response_time_ms=call.duration_ms,
            success=call.success,
            error_message=call.error,
            operation_type="idrac_api",
        )

    return record


def client_for(ctx: Any, server: Any, credentials: Any, *, settings: Any = None) -> RedfishClient:
    """A client for one `servers` row inside a job: TLS from IDRAC_* (legacy when the row asks),
    audit to idrac_commands, retries that wake on cancel (ctx.sleep). Use it with `with`.
    settings: a lib.executor.settings.HandlerSettings; default ctx.settings (read once by
    lib.executor.app.build from the program's Env, --env-file included)."""
    cfg = settings or ctx.settings
    return RedfishClient(
        server.ip_address,
        credentials.username,
        credentials.password,
        tls=tls_for(cfg.idrac.tls, bool(getattr(server, "requires_legacy_ssl", False))),
        timeout=cfg.idrac.timeout,
        audit=audit_to_context(ctx, getattr(server, "id", None) or None),
        busy_retry=busy_policy(cfg.idrac_busy_retry_seconds),
        sleep=ctx.sleep,
    )


# ---- read-only inventory: firmware, BIOS attributes, log entries -------------------------------
# Every helper below only GETs. Paths are discovered from links (service root -> UpdateService ->
# FirmwareInventory; system -> Bios; Managers/Systems -> LogServices -> Entries), never hard-coded.

# Dell names firmware inventory members <State>-<SoftwareId>-<Version>[__<FQDD>]; only the installed
# ones describe the server (Previous-/Available- are rollback images and staged packages).
DELL_INVENTORY_STATES = ("Installed-", "Previous-", "Available-", "Current-")
LOG_SERVICE_IDS = {"sel": ("sel",), "lifecycle": ("lclog",)}  # last path segment, lower case
MAX_MESSAGE_CHARS = 500
MAX_PAGES = 200  # pages of one collection read at most (a BMC's nextLink loop must end)
MAX_FIRMWARE_COMPONENTS = 2000  # a server has tens; more means a broken collection


@dataclass(frozen=True)
class FirmwareComponent:
    id: str
    name: str
    version: str | None
    updateable: bool | None
    software_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_firmware_member(body: dict[str, Any]) -> FirmwareComponent:
    """A SoftwareInventory resource -> FirmwareComponent (the fields DSM shows)."""
    ident = str(body.get("Id") or (_odata_id(body) or "").rsplit("/", 1)[-1])
    upd = body.get("Updateable")
    return FirmwareComponent(
        id=ident,
        name=str(body.get("Name") or ident),
        version=str(body["Version"]) if body.get("Version") is not None else None,
        updateable=upd if isinstance(upd, bool) else None,
        software_id=str(body["SoftwareId"]) if body.get("SoftwareId") not in (None, "") else None,
    )


def installed_members(links: list[str]) -> list[str]:
    """The members that describe what is installed: on Dell the `Installed-` ones; elsewhere all."""
    tail = [link.rstrip("/").rsplit("/", 1)[-1] for link in links]
    if any(t.startswith(DELL_INVENTORY_STATES) for t in tail):
        return [link for link, t in zip(links, tail, strict=True) if t.startswith("Installed-")]
    return links


# Fails closed: when the registry cannot be read, the name alone must withhold every secret-like
# attribute (Dell: SysPassword, IscsiDev1Con1ChapSecret, ...). A harmless match is only withheld.
SECRET_NAME = re.compile(r"passw|secret|chap|passphrase|psk|key$", re.IGNORECASE)


def is_secret_attribute(name: str, password_names: frozenset[str] = frozenset()) -> bool:
    """A BIOS attribute never to store: its name looks secret, or the registry types it Password."""
    return bool(SECRET_NAME.search(name)) or name in password_names


def parse_log_entry(body: dict[str, Any]) -> dict[str, Any]:
    """A LogEntry -> the fields DSM keeps (message clipped: a SEL/LC message is short by nature)."""
    msg = body.get("Message")
    return {
        "id": str(body.get("Id") or ""),
        "created": body.get("Created"),
        "severity": body.get("Severity"),
        "message": redact(str(msg))[:MAX_MESSAGE_CHARS] if msg is not None else None,
        "message_id": body.get("MessageId"),
        "entry_type": body.get("EntryType"),
    }


def newest_first(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort by `created` (ISO 8601 with offset), newest first; unparsable times go last."""

    def key(e: dict[str, Any]) -> float:
        try:
            return _parse_time(str(e.get("created"))).timestamp()
        except ValueError:
            return float("-inf")

    return sorted(entries, key=key, reverse=True)


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def iter_collection(
    client: RedfishClient, path: str, *, what: str, limit: int | None = None, max_pages: int = MAX_PAGES
) -> Iterator[Any]:
    """Members of a collection, following Members@odata.nextLink page by page, at most `limit`
    members and `max_pages` pages; a link to a page already read ends the walk (a BMC bug)."""
    seen = 0
    next_path: str | None = path
    pages: set[str] = set()
    while next_path:
        if next_path in pages or len(pages) >= max_pages:
            why = "links back to a page already read" if next_path in pages else f"has over {max_pages} pages"
            log.warning("iDRAC %s: %s: the collection %s; stopped there", client.address, what, why)
            return
        pages.add(next_path)
        body = client.get(next_path, what=what)
        for member in body.get("Members") or []:
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield member
        if limit is not None and seen >= limit:
            return  # do not read a page that would not be used
        link = body.get("Members@odata.nextLink")
        next_path = str(link) if link else None


def firmware_inventory(client: RedfishClient) -> list[FirmwareComponent]:
    """The installed firmware components, from UpdateService.FirmwareInventory."""
    update = _odata_id(client.root().get("UpdateService"))
    if not update:
        raise RemoteError(
            f"iDRAC {client.address}: the service root has no UpdateService", hint=HINTS["missing"]
        )
    inv = _odata_id(client.get(update, what="reading the UpdateService").get("FirmwareInventory"))
    if not inv:
        raise RemoteError(
            f"iDRAC {client.address}: UpdateService has no FirmwareInventory", hint=HINTS["missing"]
        )
    members = list(
        iter_collection(client, inv, what="listing the firmware inventory", limit=MAX_FIRMWARE_COMPONENTS)
    )
    inline = [m for m in members if isinstance(m, dict) and "Version" in m]
    if inline and len(inline) == len(members):  # an expanded collection: no GET per member
        keys = [_member_key(m) for m in inline]
        keep = set(installed_members(keys))
        return [parse_firmware_member(m) for k, m in zip(keys, inline, strict=True) if k in keep]
    links = installed_members([x for x in (_odata_id(m) for m in members) if x])
    return [parse_firmware_member(client.get(link, what="reading a firmware component")) for link in links]


def _member_key(member: dict[str, Any]) -> str:
    """An inline member's link (or its Id), the key installed_members judges by its last segment."""
    return _odata_id(member) or str(member.get("Id") or "")


def bios_attributes(client: RedfishClient, system: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"attributes": {...}, "password_names": frozenset, "registry": name or None, "registry_read": bool}.
    The attribute registry (when the BMC publishes it) names attributes typed Password; reading it
    is best effort: the name filter applies regardless."""
    system = system or client.system()
    link = _odata_id(system.get("Bios"))
    if not link:
        raise RemoteError(f"iDRAC {client.address}: the system has no Bios resource", hint=HINTS["missing"])
    bios = client.get(link, what="reading BIOS attributes")
    attrs = bios.get("Attributes") if isinstance(bios.get("Attributes"), dict) else {}
    registry = bios.get("AttributeRegistry")
    names: frozenset[str] = frozenset()
    read = False
    if registry:
        try:
            names, read = _password_attribute_names(client, str(registry))
        except AgentError as exc:
            log.info("iDRAC %s: BIOS attribute registry not read: %s", client.address, exc)
    return {"attributes": dict(attrs), "password_names": names, "registry": registry, "registry_read": read}


def _password_attribute_names(client: RedfishClient, registry: str) -> tuple[frozenset[str], bool]:
    regs = _odata_id(client.root().get("Registries"))
    if not regs:
        return frozenset(), False
    base = registry.split(".", 1)[0]
    for member in client.members(regs):
        tail = member.rstrip("/").rsplit("/", 1)[-1]
        if tail not in (registry, base):
            continue
        file = client.get(member, what="reading the registry file")
        uris = [loc.get("Uri") for loc in file.get("Location") or [] if isinstance(loc, dict)]
        uri = next((u for u in uris if u), None)
        if not uri:
            return frozenset(), False
        body = client.get(uri, what="reading the BIOS attribute registry")
        entries = (body.get("RegistryEntries") or {}).get("Attributes") or []
        return (
            frozenset(str(a.get("AttributeName")) for a in entries if a.get("Type") == "Password"),
            True,
        )
    return frozenset(), False


def log_entries_path(client: RedfishClient, kind: str) -> str | None:
    """The Entries collection of the SEL ("sel") or Dell's Lifecycle log ("lifecycle"), found in
    the manager's and then the system's LogServices (iDRAC moved the SEL between them)."""
    wanted = LOG_SERVICE_IDS[kind]
    owners = [client.manager_path(), client.system_path()]
    for owner in owners:
        services = _odata_id(client.get(owner, what="reading log services").get("LogServices"))
        if not services:
            continue
        for member in client.members(services):
            if member.rstrip("/").rsplit("/", 1)[-1].lower() in wanted:
                entries = _odata_id(client.get(member, what=f"reading the {kind} log service").get("Entries"))
                if entries:
                    return entries
    return None


def log_entries(client: RedfishClient, path: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` entries of a log (pages followed), newest first. iDRAC serves newest first,
    so the first `limit` read are the newest."""
    out = []
    for member in iter_collection(client, path, what="reading log entries", limit=limit):
        if isinstance(member, dict) and "Id" not in member and _odata_id(member):
            member = client.get(_odata_id(member) or "", what="reading a log entry")
        if isinstance(member, dict):
            out.append(parse_log_entry(member))
    return newest_first(out)
