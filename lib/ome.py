"""OpenManage Enterprise (OME) REST client and the normalisation of its devices to DSM's Device.

The client owns one HttpClient session, one OME API session (logged out always, re-created once
when OME answers 401 mid-run), paging with explicit $top/$skip checked against @odata.count, and
the per-device inventory reads. Normalisation is pure functions over the JSON OME returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from lib.config import OmeSettings
from lib.errors import AgentError, AuthError, ConfigError, ConnectivityError, RemoteError
from lib.http import HttpClient, RetryPolicy, error_for_response, remote_message
from lib.logs import register_secret

log = logging.getLogger(__name__)

SYSTEM = "OpenManage Enterprise"
SESSIONS = "/api/SessionService/Sessions"
DEVICES = "/api/DeviceService/Devices"
INFO = "/api/ApplicationService/Info"
TYPE_SERVER, TYPE_CHASSIS = 1000, 2000
INVENTORY_TYPES = ("deviceSoftware", "serverProcessors", "serverMemoryDevices")

AUTH_HINT = "Check OME_USERNAME and OME_PASSWORD, and that the OME account is enabled and not locked."
SESSION_LIMIT_HINT = (
    "OME allows 100 sessions per user and this user has used them all: delete stale sessions in OME "
    "(Application Settings > Console Preferences / Sessions) or wait for them to expire."
)

# A page or inventory read that fails is retried: 5xx and 429 (and timeouts, in HttpClient) heal.
PAGE_RETRY = RetryPolicy(attempts=4, max_seconds=30.0, statuses=frozenset({429, 500, 502, 503, 504}))

HEALTH = {1000: "OK", 2000: "Unknown", 3000: "Warning", 4000: "Critical", 5000: "Unknown"}
POWER = {17: "On", 18: "Off", 20: "PoweringOn", 21: "PoweringOff"}

_warned_http = False


# ---------------------------------------------------------------------------------------------------
# Address
# ---------------------------------------------------------------------------------------------------
def base_url(host: str, port: int = 443) -> str:
    """OME_HOST as a base URL: a name or address, host:port, [v6]:port, or an http(s) URL."""
    global _warned_http
    text = host.strip().rstrip("/")
    if not text:
        raise ConfigError("OME_HOST is empty.")
    if "://" not in text:
        if text.count(":") > 1 and not text.startswith("["):
            text = f"[{text}]"  # a bare IPv6 address
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"OME_HOST: {host!r} is not a host name, address or http(s) URL.")
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"OME_HOST: {host!r} must not contain a path.", hint="Give the appliance address only."
        )
    if parts.scheme == "http" and not _warned_http:
        _warned_http = True
        log.warning("OME_HOST uses plain http://: fine for a test stand-in, real OME appliances are HTTPS")
    hostpart = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{hostpart}:{parts.port or port}"


# ---------------------------------------------------------------------------------------------------
# Normalisation (pure)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Device:
    """One OME device as DSM's openmanage-sync expects it (CONTRACT.md section 1)."""

    device_id: str
    service_tag: str
    ip_address: str
    model: str | None = None
    hostname: str | None = None
    idrac_firmware: str | None = None
    overall_health: str = "Unknown"
    power_state: str = "Unknown"
    bios_version: str | None = None
    cpu_count: int | None = None
    memory_gb: int | None = None

    def payload(self) -> dict[str, Any]:
        """The wire record. Unknown values are left out rather than sent as null, so a sync without
        --inventory does not blank the BIOS version another sync stored. That holds only if every
        device of one request leaves out the same keys (a bulk upsert takes the union of the keys
        and NULLs the missing ones): the sync batches by `present_keys()`."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def present_keys(self) -> tuple[str, ...]:
        """The optional keys this device carries (what its payload's key set depends on)."""
        return tuple(f for f in OPTIONAL_FIELDS if getattr(self, f) is not None)

    def with_inventory(self, inv: Inventory) -> Device:
        return Device(
            **{
                **asdict(self),
                "bios_version": inv.bios_version or self.bios_version,
                "cpu_count": inv.cpu_count if inv.cpu_count is not None else self.cpu_count,
                "memory_gb": inv.memory_gb if inv.memory_gb is not None else self.memory_gb,
                "idrac_firmware": self.idrac_firmware or inv.idrac_firmware,
            }
        )


OPTIONAL_FIELDS = ("model", "hostname", "idrac_firmware", "bios_version", "cpu_count", "memory_gb")


@dataclass(frozen=True)
class Skipped:
    ident: str
    reason: str


def health_name(status: Any) -> str:
    return HEALTH.get(status, "Unknown") if isinstance(status, int) else "Unknown"


def power_name(state: Any) -> str:
    # Real appliances report 1 (and other values) for devices they cannot reach.
    return POWER.get(state, "Unknown") if isinstance(state, int) else "Unknown"


def parse_ome_time(text: str | None) -> datetime | None:
    """OME timestamps ('2024-05-01 10:20:30.123') carry no zone; they are UTC."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _usable(address: Any) -> str | None:
    if not isinstance(address, str):
        return None
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text in ("", "::", "0.0.0.0"):
        return None
    return text


def _idrac_profile(entry: dict[str, Any]) -> dict[str, Any] | None:
    for profile in entry.get("ManagementProfile") or []:
        if isinstance(profile, dict) and str(profile.get("AgentName") or "").lower() == "idrac":
            return profile
    return None


def management_address(device: dict[str, Any]) -> tuple[str | None, str | None]:
    """(iDRAC address, iDRAC firmware): the entry whose ManagementProfile has AgentName iDRAC,
    skipping "[::]" and empty addresses; else the first usable address (and no firmware)."""
    entries = [e for e in device.get("DeviceManagement") or [] if isinstance(e, dict)]
    for entry in entries:
        profile = _idrac_profile(entry)
        address = _usable(entry.get("NetworkAddress"))
        if profile is not None and address:
            return address, (str(profile.get("Version")) if profile.get("Version") else None)
    for entry in entries:
        address = _usable(entry.get("NetworkAddress"))
        if address:
            return address, None
    return None, None


def device_ident(device: dict[str, Any]) -> str:
    tag = (device.get("DeviceServiceTag") or "").strip()
    name = device.get("DeviceName") or device.get("Identifier") or ""
    return tag or (f"{name} (OME Id {device.get('Id')})" if name else f"OME Id {device.get('Id')}")


def normalise(device: dict[str, Any]) -> Device | Skipped:
    """One raw OME device -> Device, or Skipped with the reason an operator can act on."""
    tag = (device.get("DeviceServiceTag") or "").strip()
    if not tag:
        return Skipped(device_ident(device), "no service tag in OME (IOMs and some chassis have none)")
    address, firmware = management_address(device)
    if not address:
        return Skipped(tag, "no usable management address in OME (only '[::]' or empty entries)")
    return Device(
        device_id=str(device.get("Id")),
        service_tag=tag,
        ip_address=address,
        model=device.get("Model") or None,
        hostname=device.get("DeviceName") or None,
        idrac_firmware=firmware,
        overall_health=health_name(device.get("Status")),
        power_state=power_name(device.get("PowerState")),
    )


@dataclass(frozen=True)
class Inventory:
    bios_version: str | None = None
    cpu_count: int | None = None
    memory_gb: int | None = None
    idrac_firmware: str | None = None


def inventory_info(body: Any, kind: str) -> list[dict[str, Any]]:
    """InventoryInfo of one InventoryDetails answer, whether OME sent one object or a collection."""
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        details = [d for d in body["value"] if isinstance(d, dict)]
        match = [d for d in details if d.get("InventoryType") == kind] or details[:1]
        body = match[0] if match else {}
    info = body.get("InventoryInfo") if isinstance(body, dict) else None
    if isinstance(info, dict):
        return [info]
    return [i for i in info or [] if isinstance(i, dict)]


def summarise_inventory(bodies: dict[str, Any]) -> Inventory:
    """bios_version, cpu_count, memory_gb (and iDRAC firmware) from the three inventory answers."""
    bios = idrac = None
    for item in inventory_info(bodies.get("deviceSoftware"), "deviceSoftware"):
        kind = str(item.get("SoftwareType") or "").upper()
        desc = str(item.get("DeviceDescription") or "")
        if bios is None and (kind == "BIOS" or desc.upper() == "BIOS"):
            bios = item.get("Version")
        if idrac is None and ("Remote Access Controller" in desc or "iDRAC" in str(item.get("InstanceId"))):
            idrac = item.get("Version")
    cpus = inventory_info(bodies.get("serverProcessors"), "serverProcessors")
    dimms = inventory_info(bodies.get("serverMemoryDevices"), "serverMemoryDevices")
    mb = sum(int(d.get("Size") or 0) for d in dimms if str(d.get("Size") or "0").isdigit())
    return Inventory(
        bios_version=str(bios) if bios else None,
        cpu_count=len(cpus) if "serverProcessors" in bodies else None,
        memory_gb=mb // 1024 if "serverMemoryDevices" in bodies else None,
        idrac_firmware=str(idrac) if idrac else None,
    )


# ---------------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------------
class OmeAuth:
    """One OME API session: login on enter, DELETE on exit whatever happened (CURS1209 otherwise)."""

    def __init__(self, http: HttpClient, username: str, password: str) -> None:
        self.http = http
        self.username = username
        self._password = password
        self.token: str | None = None
        self.session_id: str | None = None
        self._lock = threading.Lock()

    def login(self) -> None:
        body = {"UserName": self.username, "Password": self._password, "SessionType": "API"}
        resp = self.http.post(SESSIONS, json=body)
        if resp.status_code in (200, 201) and resp.headers.get("X-Auth-Token"):
            self.token = resp.headers["X-Auth-Token"]
            register_secret(self.token)  # masked in every log line from now on
            try:
                self.session_id = str(resp.json().get("Id") or "") or None
            except ValueError:
                self.session_id = None
            log.debug("OME session %s opened", self.session_id)
            return
        code, _ = remote_message(resp)
        if code == "CURS1209":
            raise AuthError(
                "OME refused a new session: the user's session limit is reached.", hint=SESSION_LIMIT_HINT
            )
        if resp.status_code in (400, 401, 403):
            raise AuthError(
                f"OME login failed for user {self.username!r} (HTTP {resp.status_code}"
                + (f", {code}" if code else "")
                + ").",
                hint=AUTH_HINT,
            )
        raise error_for_response(resp, system=SYSTEM)

    def relogin(self, stale_token: str | None) -> str:
        """Open a new session unless another thread already replaced `stale_token`."""
        with self._lock:
            if self.token is not None and self.token == stale_token:
                log.info("OME session expired (HTTP 401): logging in again")
                # Delete the old session first: when the 401 did not end it (OME keeps sessions
                # until they time out), each retry would otherwise hold one of the user's 100.
                token, sid, self.token, self.session_id = self.token, self.session_id, None, None
                self._delete_session(token, sid)
            if self.token is None:
                # Also when another thread's re-login failed and left no session: try again, so
                # every caller gets a token or the typed error of its own attempt.
                self.login()
            if self.token is None:  # login() returns only with a token; typed, never an assert
                raise AuthError("OME login returned no session token.", hint=AUTH_HINT)
            return self.token

    def logout(self) -> None:
        token, sid, self.token, self.session_id = self.token, self.session_id, None, None
        self._delete_session(token, sid)

    def _delete_session(self, token: str | None, sid: str | None) -> None:
        """DELETE one OME session; best effort, never raises (401/404: already gone)."""
        if not token or not sid:
            return
        try:
            resp = self.http.request(
                "DELETE",
                f"{SESSIONS}('{sid}')",
                headers={"X-Auth-Token": token},
                retry=RetryPolicy(attempts=2),
            )
            if resp.status_code not in (200, 204, 401, 404):  # 401/404: already gone
                log.warning("OME session logout answered HTTP %s", resp.status_code)
        except AgentError as exc:
            log.warning("OME session logout failed: %s", exc)

    def __enter__(self) -> OmeAuth:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()


@dataclass
class Page:
    skip: int
    devices: list[dict[str, Any]]
    total: int


@dataclass
class PageFailure:
    skip: int
    top: int
    error: str


@dataclass
class PagingStats:
    pages: int = 0
    total: int | None = None
    received: int = 0
    failures: list[PageFailure] = field(default_factory=list)


def type_filter(types: Iterable[int]) -> str:
    return " or ".join(f"Type eq {t}" for t in types)


class OmeClient:
    """Talks to one OME appliance. Use as a context manager: it logs in and always logs out."""

    def __init__(self, settings: OmeSettings, *, http: HttpClient | None = None) -> None:
        self.settings = settings
        self.http = http or HttpClient(
            base_url(settings.host, settings.port),
            settings.tls,
            system=SYSTEM,
            timeout=(5.0, settings.timeout),
            pool_size=max(10, settings.inventory_threads + 2),
        )
        self.auth = OmeAuth(self.http, settings.username, settings.password)

    def __enter__(self) -> OmeClient:
        try:
            self.auth.login()
        except BaseException:
            self.http.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.auth.logout()
        finally:
            self.http.close()

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    # -- the one request path ----------------------------------------------------------------------
    def _request(self, method: str, path: str, *, retry: RetryPolicy | None = None) -> requests.Response:
        """Send with the session token; on 401 log in again once and resend."""
        token = self.auth.token
        resp = self.http.request(method, path, headers={"X-Auth-Token": token or ""}, retry=retry)
        if resp.status_code == 401:
            token = self.auth.relogin(token)
            resp = self.http.request(method, path, headers={"X-Auth-Token": token}, retry=retry)
            if resp.status_code == 401:
                raise AuthError("OME rejected a fresh session (HTTP 401).", hint=AUTH_HINT)
        return resp

    def get_json(self, path: str, *, retry: RetryPolicy | None = None) -> Any:
        resp = self._request("GET", path, retry=retry)
        if resp.status_code >= 400:
            raise error_for_response(resp, system=SYSTEM, auth_hint=AUTH_HINT)
        try:
            return resp.json()
        except ValueError:
            raise RemoteError(
                f"OME answered {path} with a body that is not JSON.", status=resp.status_code
            ) from None

    def app_info(self) -> dict[str, Any]:
        """Name and version of the appliance (for the log and --check)."""
        info = self.get_json(INFO, retry=PAGE_RETRY)
        return info if isinstance(info, dict) else {}

    # -- devices ------------------------------------------------------------------------------------
    def _page_path(self, flt: str, top: int, skip: int) -> str:
        # spaces as %20: OME does not read '+' as a space
        return f"{DEVICES}?$filter={quote(flt, safe='')}&$top={top}&$skip={skip}"

    def iter_pages(
        self, types: Iterable[int] = (TYPE_SERVER,), *, stats: PagingStats | None = None
    ) -> Iterator[Page]:
        """Every device of `types`, page by page. A page that still fails after retries is recorded in
        `stats.failures` and skipped (the sync becomes partial); the first page failing raises."""
        stats = stats if stats is not None else PagingStats()
        flt, top, skip = type_filter(types), self.settings.page_size, 0
        while True:
            try:
                body = self.get_json(self._page_path(flt, top, skip), retry=PAGE_RETRY)
            except (RemoteError, ConnectivityError) as exc:
                if stats.total is None:
                    raise
                log.warning("OME devices page at $skip=%d failed after retries: %s", skip, exc)
                stats.failures.append(PageFailure(skip, top, str(exc)))
                skip += top
                if skip >= stats.total:
                    break
                continue
            values = body.get("value") if isinstance(body, dict) else None
            if not isinstance(values, list):
                raise RemoteError("OME answered the device list without a 'value' array.")
            count = body.get("@odata.count")
            stats.pages += 1
            stats.received += len(values)
            if isinstance(count, int):
                stats.total = count
            elif stats.total is None:
                stats.total = -1  # unknown: rely on nextLink
            yield Page(skip, values, stats.total)
            # advance by what came back: an appliance may cap $top below what we asked
            skip += len(values)
            if not values or not self._more(body, skip, stats.total):
                break
        if stats.total is not None and 0 <= stats.received < stats.total and not stats.failures:
            log.warning("OME reported %d devices but %d were read", stats.total, stats.received)

    @staticmethod
    def _more(body: dict[str, Any], skip: int, total: int) -> bool:
        if total >= 0:
            return skip < total
        # no @odata.count: the nextLink says whether there is more (we never follow it as is,
        # because OME drops $filter from it)
        return bool(body.get("@odata.nextLink"))

    # -- inventory -------------------------------------------------------------------------------------
    def inventory(self, device_id: str | int) -> Inventory:
        bodies = {
            kind: self.get_json(f"{DEVICES}({int(device_id)})/InventoryDetails('{kind}')", retry=PAGE_RETRY)
            for kind in INVENTORY_TYPES
        }
        return summarise_inventory(bodies)

    def with_inventory(
        self, devices: list[Device], *, on_error: Callable[[Device, AgentError], None]
    ) -> list[Device]:
        """The devices with bios_version, cpu_count and memory_gb, read in a bounded thread pool."""
        if not devices:
            return devices
        from concurrent.futures import ThreadPoolExecutor

        def one(dev: Device) -> Device:
            try:
                return dev.with_inventory(self.inventory(dev.device_id))
            except AuthError:
                raise
            except AgentError as exc:
                on_error(dev, exc)
                return dev

        with ThreadPoolExecutor(
            max_workers=self.settings.inventory_threads, thread_name_prefix="ome-inv"
        ) as pool:
            return list(pool.map(one, devices))
