"""Workflow 2: vCenter -> DSM (edge function vcenter-sync).

`sync_vcenter` is the one code path (the script and an executor job both call it): it reads the
whole inventory in a few property-collector round trips (lib/vsphere.py), turns it into the
vcenter-sync shape of CONTRACT.md section 2, and hands the hosts to the shared batch sender.

Order matters: the script authenticates to DSM FIRST (sign-in with DSM_EMAIL/DSM_PASSWORD, a
DSM_JWT_TOKEN checked with Supabase Auth, or the executor HMAC secret) and proves the credential with
a request that writes nothing (lib/sync/edge.connect_dsm), so a bad DSM credential fails before
vCenter is touched (no failed-login count on the vCenter account for a DSM mistake).

Non-destructive: the body only ever lists what vCenter has. Hosts that disappeared from vCenter
are left in DSM; nothing here asks the backend to delete anything.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lib.config import VcenterSettings
from lib.sync.common import Checklist, Progress, SyncReport, write_output
from lib.sync.delivery import BatchOutcome, DeliveryResult, deliver
from lib.sync.edge import connect_dsm, edge_batch_sender, with_dsm
from lib.sync.edge import judge_reply as judge_summary
from lib.vsphere import ClusterInfo, DatacenterInfo, HostInfo, Inventory, VSphereClient

if TYPE_CHECKING:
    from lib.dsm.edge import EdgeClient

log = logging.getLogger(__name__)

FUNCTION = "vcenter-sync"
LOGIN_ROUND_TRIPS = 3  # vimServiceVersions.xml, RetrieveServiceContent, Login (before our counter)

FLAG_MAP = {"batch_size": "VCENTER_BATCH_SIZE", "vcenter_id": "VCENTER_ID"}


@dataclass(frozen=True)
class VcenterSyncOptions:
    batch_size: int = 500
    vcenter_id: str | None = None  # DSM `vcenters` row id, sent at the top of the body
    job_id: str | None = None  # set when an executor job runs the sync
    output: str | None = None


SendBatch = Callable[[list[HostInfo]], BatchOutcome]


# ---------------------------------------------------------------------------------------------------
# The wire shape (CONTRACT.md section 2, plus extras the function ignores today)
# ---------------------------------------------------------------------------------------------------
def host_payload(h: HostInfo) -> dict[str, Any]:
    version = " ".join(p for p in (h.esxi_version, h.esxi_build) if p) or None
    return {
        "name": h.name,
        "cluster": h.cluster,
        "vcenter_id": h.moref,
        "serial_number": h.serial_number,
        "esxi_version": version,
        "status": (h.connection_state or "unknown").lower(),
        "maintenance_mode": h.maintenance_mode,
        # extras
        "cluster_id": h.cluster_moref,
        "datacenter": h.datacenter,
        "datacenter_id": h.datacenter_moref,
        "vendor": h.vendor,
        "model": h.model,
        "power_state": h.power_state,
        "cpu_sockets": h.cpu_sockets,
        "cpu_cores": h.cpu_cores,
        "cpu_threads": h.cpu_threads,
        "cpu_model": h.cpu_model,
        "memory_gb": h.memory_gb,
    }


def cluster_payload(c: ClusterInfo) -> dict[str, Any]:
    return {
        "name": c.name,
        "vcenter_id": c.moref,
        "datacenter": c.datacenter,
        "datacenter_id": c.datacenter_moref,
        "ha_enabled": c.ha_enabled,
        "drs_enabled": c.drs_enabled,
        "drs_automation_level": c.drs_automation_level,
        "host_count": c.host_count,
        "overall_status": c.overall_status,
    }


def datacenter_payload(d: DatacenterInfo) -> dict[str, Any]:
    return {"name": d.name, "vcenter_id": d.moref}


def full_body(inv: Inventory, options: VcenterSyncOptions) -> dict[str, Any]:
    """Everything in one body (what --output writes and a dry run shows)."""
    body = _envelope(options)
    body["hosts"] = [host_payload(h) for h in inv.hosts]
    body["clusters"] = [cluster_payload(c) for c in inv.clusters]
    body["datacenters"] = [datacenter_payload(d) for d in inv.datacenters]
    return body


def _envelope(options: VcenterSyncOptions) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if options.vcenter_id:
        body["vcenter_id"] = options.vcenter_id
    if options.job_id:
        body["job_id"] = options.job_id
    return body


class BodyBuilder:
    """Each request carries its hosts plus the clusters and datacenters they belong to; the first
    request also carries clusters without hosts, so every cluster reaches DSM exactly once or more.
    Upserts are idempotent, so a repeat (after a batch is split) does no harm."""

    def __init__(self, inv: Inventory, options: VcenterSyncOptions) -> None:
        self.options = options
        self.clusters = {c.moref: c for c in inv.clusters}
        self.datacenters = {d.moref: d for d in inv.datacenters}
        used = {h.cluster_moref for h in inv.hosts}
        self.orphans = [c for c in inv.clusters if c.moref not in used]
        self._first = True

    def __call__(self, batch: list[HostInfo]) -> dict[str, Any]:
        clusters = {
            h.cluster_moref: self.clusters[h.cluster_moref] for h in batch if h.cluster_moref in self.clusters
        }
        dcs = {h.datacenter_moref for h in batch} | {c.datacenter_moref for c in clusters.values()}
        if self._first:
            clusters.update({c.moref: c for c in self.orphans})
            dcs |= {c.datacenter_moref for c in self.orphans} | set(self.datacenters)
            self._first = False
        body = _envelope(self.options)
        body["hosts"] = [host_payload(h) for h in batch]
        body["clusters"] = [cluster_payload(c) for c in clusters.values()]
        body["datacenters"] = [
            datacenter_payload(self.datacenters[d]) for d in sorted(dcs, key=str) if d in self.datacenters
        ]
        return body


def judge_reply(reply: dict[str, Any]) -> BatchOutcome:
    """vcenter-sync's verdict: `success: false` fails the batch; `errors` name single hosts."""
    return judge_summary(reply)


def edge_sender(edge: Any, build_body: Callable[[list[HostInfo]], dict[str, Any]]) -> SendBatch:
    """The shared edge batch sender with vcenter-sync's body and judge (upserts by host moref)."""
    return edge_batch_sender(edge, FUNCTION, build_body, judge_reply)


# ---------------------------------------------------------------------------------------------------
# The sync
# ---------------------------------------------------------------------------------------------------
def sync_vcenter(
    vc: VcenterSettings,
    make_sender: Callable[[Inventory], SendBatch] | None,
    options: VcenterSyncOptions,
    report: SyncReport,
    *,
    progress: Progress | None = None,
) -> Inventory:
    """Read the inventory from vCenter and deliver its hosts (make_sender None: dry run)."""
    report.dry_run = make_sender is None
    client = VSphereClient(vc)
    try:
        with client:
            inv = client.inventory()
    finally:
        report.requests["vcenter"] = client.round_trips + LOGIN_ROUND_TRIPS
    _describe(inv, report)
    if options.output:
        write_output(options.output, full_body(inv, options))
    if make_sender is None:
        report.sent = len(inv.hosts)
        return inv
    if not inv.hosts:
        log.warning("vCenter %s has no hosts: nothing to send", vc.host)
        return inv
    total = len(inv.hosts)

    def on_batch(result: Any) -> None:
        if progress is not None:
            progress.update(result.sent + len(result.failed), total)

    result: DeliveryResult[HostInfo] = DeliveryResult()
    try:
        deliver(
            inv.hosts,
            make_sender(inv),
            batch_size=options.batch_size,
            key=lambda h: h.moref,
            on_batch=on_batch,
            result=result,
        )
    finally:  # also after a fatal error: the report says what was saved
        if progress is not None:
            progress.done()
        report.absorb(result, lambda h: f"{h.name} ({h.moref})")
    return inv


def _describe(inv: Inventory, report: SyncReport) -> None:
    report.seen = len(inv.hosts)
    standalone = sum(1 for h in inv.hosts if h.cluster is None)
    no_serial = [h.name for h in inv.hosts if not h.serial_number]
    report.extra.update(
        {
            "vcenter": f"{inv.about.name} ({inv.about.api_type})",
            "datacenters": len(inv.datacenters),
            "clusters": len(inv.clusters),
            "standalone_hosts": standalone,
            "hosts_without_serial": len(no_serial),
            "property_pages": inv.pages,
        }
    )
    log.info(
        "vCenter inventory: %d datacenter(s), %d cluster(s), %d host(s) (%d standalone) in %d page(s)",
        len(inv.datacenters),
        len(inv.clusters),
        len(inv.hosts),
        standalone,
        inv.pages,
    )
    if no_serial:
        # sent anyway (serial_number null): they just cannot be linked to a DSM server
        log.warning(
            "%d host(s) report no serial number and cannot be linked to servers: %s",
            len(no_serial),
            ", ".join(no_serial[:10]),
        )


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
EPILOG = """\
Never deletes: the script only sends what vCenter has. Hosts, clusters or datacenters that
disappeared from vCenter stay in DSM (remove them in DSM if you mean to); nothing here asks the
backend to delete anything.

Order: DSM credentials are checked first, then vCenter is read (a few SOAP round trips whatever
its size), then hosts are sent to the vcenter-sync edge function in batches.

Configuration comes from flags, then the environment, then the .env file:
  VCENTER_HOST, VCENTER_PORT, VCENTER_USER (e.g. svc-dsm@vsphere.local), VCENTER_PASSWORD,
  VCENTER_VERIFY_SSL, VCENTER_CA_BUNDLE, VCENTER_ID, VCENTER_BATCH_SIZE;
  SUPABASE_URL, SUPABASE_ANON_KEY, and DSM_EMAIL + DSM_PASSWORD (or DSM_JWT_TOKEN, or
  EXECUTOR_SHARED_SECRET).

Cron: nothing is printed on stdout unless --json is given; a second run while one is going
exits 0 with one line on stderr (or waits, with --wait-lock)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lib.sync.common import add_sync_arguments

    group = parser.add_argument_group("vCenter options")
    group.add_argument(
        "--vcenter-id", metavar="UUID", help="DSM vcenters row id to send as vcenter_id (VCENTER_ID)"
    )
    add_sync_arguments(parser, batch_default="VCENTER_BATCH_SIZE, default 500")


def run_check(env: Any) -> int:
    """--check: configuration, DSM credentials, vCenter login and inventory size. Sends nothing."""
    from lib.checks import backend_endpoint, endpoint_checks
    from lib.config import dsm_settings, vcenter_settings
    from lib.vsphere import endpoint, split_host

    checks = Checklist()
    holder: dict[str, Any] = {}

    def config() -> str:
        holder["vc"] = vcenter_settings(env)
        holder["dsm"] = dsm_settings(env)
        env.check()
        return f"vCenter {holder['vc'].host}:{holder['vc'].port} as {holder['vc'].user}"

    if not checks.run("configuration", config):
        return checks.exit_code()

    def dsm() -> str:
        edge, auth = connect_dsm(holder["dsm"], FUNCTION)  # signs in and probes; writes nothing
        edge.close()
        return auth.described

    if not endpoint_checks(checks, backend_endpoint(holder["dsm"]), "DSM backend"):
        checks.skip("DSM credentials", "the connection checks above failed")
        checks.skip("vCenter", "DSM checks failed first")
        return checks.exit_code()
    if not checks.run("DSM credentials", dsm):
        checks.skip("vCenter", "DSM credentials failed first")
        return checks.exit_code()
    vc_endpoint = endpoint(*split_host(holder["vc"].host, holder["vc"].port), holder["vc"].tls)
    if not endpoint_checks(checks, vc_endpoint, "vCenter"):
        checks.skip("vCenter login and inventory", "the connection checks above failed")
        return checks.exit_code()

    def vcenter() -> str:
        with VSphereClient(holder["vc"]) as client:
            inv = client.inventory()
        return (
            f"{inv.about.name}: {len(inv.datacenters)} datacenter(s), {len(inv.clusters)} cluster(s), "
            f"{len(inv.hosts)} host(s) to sync"
        )

    checks.run("vCenter login and inventory", vcenter)
    return checks.exit_code()


def main(args: argparse.Namespace) -> int:
    from lib.cli import make_env
    from lib.config import dsm_settings, vcenter_settings
    from lib.sync.common import default_lock_path, run_sync

    env = make_env(args, FLAG_MAP)
    if args.check:
        return run_check(env)
    vc = vcenter_settings(env)
    dsm = None if args.dry_run else dsm_settings(env)
    env.check()
    options = VcenterSyncOptions(batch_size=vc.batch_size, vcenter_id=vc.vcenter_id, output=args.output)
    report = SyncReport("vCenter")
    if not args.lock_file:
        args.lock_file = str(default_lock_path("vcenter-sync"))

    def work(rep: SyncReport) -> None:
        def run(edge: EdgeClient | None) -> None:
            make_sender = (lambda inv: edge_sender(edge, BodyBuilder(inv, options))) if edge else None
            sync_vcenter(vc, make_sender, options, rep, progress=Progress("vCenter hosts sent"))

        # DSM first, proven by a request that writes nothing: a DSM mistake never costs a vCenter login
        with_dsm(dsm, FUNCTION, run)

    return run_sync(args, name="vcenter-sync", report=report, work=work)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from lib.cli import base_parser

    parser = base_parser(prog, description, EPILOG)
    add_arguments(parser)
    return parser
