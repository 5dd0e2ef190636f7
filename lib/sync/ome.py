"""Workflow 1: OpenManage Enterprise -> DSM (edge function openmanage-sync).

`sync_ome` is the one code path (the script and an executor job both call it): it streams OME
device pages, normalises them, optionally adds per-device inventory, and hands them to a batch
sender; the report is filled as it goes, so a failure half-way still says what was saved.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lib.config import OmeSettings
from lib.ome import TYPE_CHASSIS, TYPE_SERVER, Device, OmeClient, PagingStats, Skipped, normalise
from lib.sync.common import Checklist, Item, Progress, SyncReport, write_output
from lib.sync.delivery import BatchOutcome, DeliveryResult, deliver
from lib.sync.edge import connect_dsm, edge_batch_sender, with_dsm
from lib.sync.edge import judge_reply as judge_summary

if TYPE_CHECKING:
    from lib.dsm.edge import EdgeClient

log = logging.getLogger(__name__)

FUNCTION = "openmanage-sync"
BULK_FAILED = "Bulk upsert failed:"
# Batches in flight at once: the backend's answer time overlaps with reading OME.
DELIVERY_WORKERS = 2

FLAG_MAP = {
    "page_size": "OME_PAGE_SIZE",
    "batch_size": "OME_BATCH_SIZE",
    "inventory_threads": "OME_INVENTORY_THREADS",
}


@dataclass(frozen=True)
class OmeSyncOptions:
    include_chassis: bool = False
    inventory: bool = False
    dry_run: bool = False
    batch_size: int = 200
    output: str | None = None
    scheduled: bool = False


SendBatch = Callable[[list[Device]], BatchOutcome]


# ---------------------------------------------------------------------------------------------------
# The request body and the backend's verdict on one batch (the TRAP of CONTRACT.md section 1)
# ---------------------------------------------------------------------------------------------------
def judge_reply(reply: dict[str, Any]) -> BatchOutcome:
    """openmanage-sync answers 200 success:true even when its upsert failed and saved nothing; the
    only sign is an `errors` entry starting "Bulk upsert failed:". Such a batch counts as failed."""
    return judge_summary(reply, whole_batch_failed=BULK_FAILED)


def request_body(batch: list[Device], *, scheduled: bool) -> dict[str, Any]:
    return {"devices": [d.payload() for d in batch], "manual": not scheduled, "scheduled": scheduled}


def edge_sender(edge: Any, *, scheduled: bool) -> SendBatch:
    """The shared edge batch sender with openmanage-sync's body and judge."""
    return edge_batch_sender(edge, FUNCTION, lambda b: request_body(b, scheduled=scheduled), judge_reply)


# ---------------------------------------------------------------------------------------------------
# The sync
# ---------------------------------------------------------------------------------------------------
def sync_ome(
    ome: OmeSettings,
    send_batch: SendBatch | None,
    options: OmeSyncOptions,
    report: SyncReport,
    *,
    progress: Progress | None = None,
) -> None:
    """Read every device from OME and deliver it through `send_batch` (None: dry run)."""
    types = (TYPE_SERVER, TYPE_CHASSIS) if options.include_chassis else (TYPE_SERVER,)
    stats = PagingStats()
    collected: list[dict[str, Any]] | None = [] if options.output else None
    report.dry_run = send_batch is None
    inventory_errors: list[str] = []

    client = OmeClient(ome)
    try:
        _run(
            client,
            send_batch,
            options,
            report,
            types,
            stats,
            collected,
            inventory_errors,
            progress,
            ome.page_size,
        )
    finally:
        # read after the with block so the logout is counted too
        report.requests["ome"] = client.requests_sent
        _finish(report, stats, inventory_errors, collected, options)


def _run(
    client: OmeClient,
    send_batch: SendBatch | None,
    options: OmeSyncOptions,
    report: SyncReport,
    types: tuple[int, ...],
    stats: PagingStats,
    collected: list[dict[str, Any]] | None,
    inventory_errors: list[str],
    progress: Progress | None,
    page_size: int,
) -> None:
    with client:
        info = client.app_info()
        report.extra["ome_version"] = info.get("Version")
        log.info(
            "connected to %s %s at %s",
            info.get("Name", "OME"),
            info.get("Version", "?"),
            client.http.base_url,
        )

        def devices() -> Iterator[Device]:
            seen_tags: dict[str, str] = {}
            for page in client.iter_pages(types, stats=stats):
                report.seen += len(page.devices)
                ready: list[Device] = []
                for raw in page.devices:
                    rec = normalise(raw)
                    if isinstance(rec, Skipped):
                        report.skipped.append(Item(rec.ident, rec.reason))
                    elif rec.service_tag in seen_tags:
                        report.skipped.append(
                            Item(
                                rec.service_tag,
                                f"same service tag as OME device {seen_tags[rec.service_tag]}",
                            )
                        )
                    else:
                        seen_tags[rec.service_tag] = rec.device_id
                        ready.append(rec)
                if options.inventory:
                    ready = client.with_inventory(
                        ready,
                        on_error=lambda d, e: inventory_errors.append(f"{d.service_tag}: {e.message}"),
                    )
                if progress is not None and page.total > 0:
                    progress.update(stats.pages, -(-page.total // page_size))
                for dev in ready:
                    if collected is not None:
                        collected.append(dev.payload())
                    yield dev

        try:
            if send_batch is None:
                report.sent = sum(1 for _ in devices())
            else:
                result: DeliveryResult[Device] = DeliveryResult()
                try:
                    deliver(
                        devices(),
                        send_batch,
                        batch_size=options.batch_size,
                        key=lambda d: d.service_tag,
                        # same key set within a request: a bulk upsert NULLs a key other rows carry
                        group=lambda d: d.present_keys(),
                        workers=DELIVERY_WORKERS,
                        result=result,
                    )
                finally:  # also after a fatal error: the report says what was saved
                    report.absorb(result, lambda d: d.service_tag)
        finally:
            if progress is not None:
                progress.done()


def _finish(
    report: SyncReport,
    stats: PagingStats,
    inventory_errors: list[str],
    collected: list[dict[str, Any]] | None,
    options: OmeSyncOptions,
) -> None:
    report.extra["pages"] = stats.pages
    report.extra["ome_total"] = stats.total
    for failure in stats.failures:
        report.failed.append(
            Item(
                f"OME devices $skip={failure.skip} $top={failure.top}",
                f"page not read, up to {failure.top} devices missing: {failure.error}",
            )
        )
    if inventory_errors:
        # the devices were saved without inventory fields; say so, loudly
        report.extra["inventory_errors"] = inventory_errors
        log.warning(
            "inventory could not be read for %d device(s): %s",
            len(inventory_errors),
            "; ".join(inventory_errors[:5]),
        )
    if collected is not None and options.output:
        write_output(options.output, collected)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
EPILOG = """\
Configuration comes from flags, then the environment, then the .env file:
  OME_HOST, OME_USERNAME, OME_PASSWORD, OME_VERIFY_SSL, OME_CA_BUNDLE, OME_PAGE_SIZE,
  OME_BATCH_SIZE, OME_INVENTORY_THREADS, OME_TIMEOUT; SUPABASE_URL (or DSM_EDGE_FUNCTION_URL),
  SUPABASE_ANON_KEY, and DSM_API_TOKEN, or DSM_EMAIL and DSM_PASSWORD, or DSM_JWT_TOKEN (the
  first one set is used, and checked before OME is contacted).

Cron: nothing is printed on stdout unless --json is given; a second run while one is going
exits 0 with one line on stderr (or waits, with --wait-lock)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lib.sync.common import add_sync_arguments

    group = parser.add_argument_group("OpenManage options")
    group.add_argument("--include-chassis", action="store_true", help="also sync chassis (Type 2000)")
    group.add_argument(
        "--inventory",
        action="store_true",
        help="read BIOS version, CPU count and memory per device (3 extra OME calls per device)",
    )
    group.add_argument(
        "--page-size", type=int, metavar="N", help="devices per OME page (OME_PAGE_SIZE, default 200)"
    )
    group.add_argument(
        "--inventory-threads",
        type=int,
        metavar="N",
        help="parallel inventory reads (OME_INVENTORY_THREADS, default 8)",
    )
    add_sync_arguments(parser, batch_default="OME_BATCH_SIZE, default 200")


def run_check(env: Any, args: argparse.Namespace) -> int:
    """--check: configuration, OME login and version, device count, backend credentials."""
    from lib.checks import Endpoint, backend_endpoint, endpoint_checks
    from lib.config import dsm_settings, ome_settings
    from lib.ome import type_filter

    checks = Checklist()
    holder: dict[str, Any] = {}

    def config() -> str:
        holder["ome"] = ome_settings(env)
        holder["dsm"] = dsm_settings(env)
        env.check()
        return f"OME {holder['ome'].host} as {holder['ome'].username}"

    if not checks.run("configuration", config):
        return checks.exit_code()
    client = OmeClient(holder["ome"])
    ome_endpoint = Endpoint.from_url(
        client.http.base_url, setting="OME_HOST", system="OME", tls=holder["ome"].tls
    )

    def login() -> str:
        client.__enter__()
        return f"session opened at {client.http.base_url}"

    if not endpoint_checks(checks, ome_endpoint, "OME"):
        checks.skip("OME login", "the connection checks above failed")
    elif checks.run("OME login", login):
        try:

            def version() -> str:
                info = client.app_info()
                return f"{info.get('Name', 'OME')} {info.get('Version', '?')}"

            def devices() -> str:
                types = (TYPE_SERVER, TYPE_CHASSIS) if args.include_chassis else (TYPE_SERVER,)
                body = client.get_json(client._page_path(type_filter(types), 1, 0))
                return f"{body.get('@odata.count', '?')} device(s) to sync"

            checks.run("OME version", version)
            checks.run("OME devices", devices)
        finally:
            client.__exit__(None, None, None)
    else:
        checks.skip("OME version", "no OME session")

    def backend() -> str:
        edge, auth = connect_dsm(holder["dsm"], FUNCTION)  # signs in and probes; writes nothing
        edge.close()
        return f"openmanage-sync answers and accepts the credentials ({auth.described})"

    if endpoint_checks(checks, backend_endpoint(holder["dsm"]), "DSM backend"):
        checks.run("DSM backend", backend)
    else:
        checks.skip("DSM backend", "the connection checks above failed")
    return checks.exit_code()


def main(args: argparse.Namespace) -> int:
    from lib.cli import make_env
    from lib.config import dsm_settings, ome_settings
    from lib.sync.common import default_lock_path, run_sync

    env = make_env(args, FLAG_MAP)
    if args.check:
        return run_check(env, args)
    ome = ome_settings(env)
    dsm = None if args.dry_run else dsm_settings(env)
    env.check()
    options = OmeSyncOptions(
        include_chassis=args.include_chassis,
        inventory=args.inventory,
        dry_run=args.dry_run,
        batch_size=ome.batch_size,
        output=args.output,
        scheduled=not sys.stdin.isatty(),
    )
    report = SyncReport("OpenManage")
    if not args.lock_file:
        args.lock_file = str(default_lock_path("openmanage-sync"))

    def work(rep: SyncReport) -> None:
        def run(edge: EdgeClient | None) -> None:
            sender = edge_sender(edge, scheduled=options.scheduled) if edge else None
            sync_ome(ome, sender, options, rep, progress=Progress("OME pages"))

        with_dsm(dsm, FUNCTION, run)  # DSM first: a bad DSM credential fails before OME is touched

    return run_sync(args, name="openmanage-sync", report=report, work=work)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from lib.cli import base_parser

    parser = base_parser(prog, description, EPILOG)
    add_arguments(parser)
    return parser
