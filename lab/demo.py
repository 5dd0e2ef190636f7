"""The one-command demo (`make demo`): the whole agent against the lab, on 127.0.0.1 only.

It starts the lab backend on a fresh database, the OME simulator (about 40 devices, HTTPS with its
own CA), one simulated iDRAC per OME server, and vcsim with hosts whose serials are some of the
OME service tags; runs openmanage-sync-script.py and vcenter-sync-script.py as an operator would
(subprocesses configured by environment variables); inserts jobs as the DSM UI does; runs
`job-executor.py --once` until they finish; prints a short summary on stdout; and stops everything
it started, also on Ctrl-C or SIGTERM. Progress lines go to stderr.

Exit code: 0 when servers were synced, hosts linked and every job ended as expected; 1 otherwise;
130 when interrupted.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lab.demo_parts import ROOT, Jobs, Stack, interrupts, run_program, spawn_json

log = logging.getLogger("demo")

DEVICES = 40  # OME devices: servers, one chassis, one IOM and the literal trap devices
IDRACS = 36  # simulated iDRACs; OME points its first servers with an iDRAC address at them
LINKED_HOSTS = 6  # vcsim hosts whose serial is an OME service tag (of 2 clusters x 4 + 1)
IDRAC_PASSWORD = "Demo-" + secrets.token_urlsafe(9)


def _say(started: float, message: str, *args: Any) -> None:
    log.info("[%5.1f s] " + message, time.monotonic() - started, *args)


def run_demo(out: Any = sys.stdout) -> int:
    started = time.monotonic()
    stack = Stack()
    work = Path(tempfile.mkdtemp(prefix="dsm-demo-"))
    stack.push("work directory", lambda: _rmtree(work))
    empty_env = work / "empty.env"
    empty_env.write_text("")  # the scripts must not read a developer's .env
    summary: dict[str, Any] = {}
    _say(started, "work directory %s", work)
    try:
        _run(stack, work, empty_env, started, summary)
    finally:
        with interrupts.shielded():
            stopped = stack.close()
        summary["stopped"] = stopped
        summary["elapsed"] = time.monotonic() - started
        if "ok" in summary:  # ran to the end (not interrupted, no exception)
            _print_summary(summary, out)
    return 0 if summary.get("ok") else 1


def _run(stack: Stack, work: Path, empty_env: Path, started: float, summary: dict[str, Any]) -> None:
    from lab.backend.launcher import BackendProcess, create_database, drop_database
    from lab.vcsim import launcher as vcsim
    from lib.dsm.credentials import encrypt_password

    # 1. the backend, on a database of our own (dropped last, even when the backend fails to start)
    with interrupts.shielded():
        db_url = create_database("dsm_demo")
        db_name = db_url.rsplit("/", 1)[-1].split("?", 1)[0]
        stack.push(f"database {db_name}", lambda: drop_database(db_url))
    summary["database"] = db_name
    with interrupts.shielded():
        backend = BackendProcess(db_url, apply_migrations=True)
        stack.push(f"lab backend (pid {backend.pid})", backend.close)
    _say(started, "lab backend at %s (pid %s), database %s", backend.url, backend.pid, db_name)

    # 2. simulated iDRACs, then OME pointing its servers at them
    idrac_proc, idracs = spawn_json(
        stack,
        "iDRAC simulator",
        [
            "-m",
            "lab.idrac_sim",
            "--servers",
            str(IDRACS),
            "--tls",
            "--power-delay",
            "1",
            "--password",
            IDRAC_PASSWORD,
        ],
    )
    addresses = [s["address"] for s in idracs["servers"]]
    _say(started, "%d simulated iDRACs on 127.0.0.1 (pid %s)", len(addresses), idrac_proc.pid)
    address_file = work / "idrac-addresses.txt"
    address_file.write_text("\n".join(addresses) + "\n")
    ome_proc, ome = spawn_json(
        stack,
        "OME simulator",
        ["-m", "lab.ome_sim", "--devices", str(DEVICES), "--idrac-addresses", str(address_file)],
    )
    simulated = ome["idrac_addresses"]  # service tag -> iDRAC address, in OME's order
    _say(started, "OME simulator at %s (pid %s): %d devices", ome["url"], ome_proc.pid, DEVICES)

    # 3. vcsim: its first hosts carry OME service tags, so vcenter-sync can link them
    with interrupts.shielded():
        vc = vcsim.start(
            clusters=2, hosts_per_cluster=4, standalone_hosts=1, service_tags=list(simulated)[:LINKED_HOSTS]
        )
        stack.push(f"vcsim (pid {vc.process.pid})", vc.stop)
    _say(started, "vcsim at https://%s:%d (pid %s)", vc.host, vc.port, vc.process.pid)

    # 4. what an administrator sets up in the DSM UI
    key = os.urandom(32)
    backend.sql(
        "INSERT INTO activity_settings (encryption_key) VALUES (%s)", (base64.b64encode(key).decode(),)
    )
    good = backend.sql(
        "INSERT INTO credential_sets (name, username, password_encrypted, credential_type, priority)"
        " VALUES ('lab iDRACs', 'root', %s, 'idrac', 10) RETURNING id",
        (encrypt_password(IDRAC_PASSWORD, key),),
    )[0]["id"]
    backend.sql(
        "INSERT INTO credential_ip_ranges (credential_set_id, ip_range, priority) VALUES (%s, '127.0.0.1', 10)",
        (good,),
    )
    stale = backend.sql(
        "INSERT INTO credential_sets (name, username, password_encrypted, credential_type, priority)"
        " VALUES ('old password', 'root', %s, 'idrac', 20) RETURNING id",
        (encrypt_password("not-the-password", key),),
    )[0]["id"]
    vcenter_id = backend.sql(
        "INSERT INTO vcenters (name, host, port, username, password_encrypted)"
        " VALUES ('lab vCenter', %s, %s, %s, %s) RETURNING id",
        (vc.host, vc.port, vc.user, encrypt_password(vc.password, key)),
    )[0]["id"]
    ome_url = urlsplit(ome["url"])  # the openmanage_sync job reads its connection from here
    backend.sql(
        "INSERT INTO openmanage_settings (host, port, username, password, sync_enabled)"
        " VALUES (%s, %s, %s, %s, true)",
        (ome_url.hostname, ome_url.port, ome["username"], encrypt_password(ome["password"], key)),
    )
    email, password = "operator@demo.local", "Demo-" + secrets.token_urlsafe(12)
    backend.create_user(email, password, role="operator")
    token = backend.create_api_token("demo")
    dsm = {"SUPABASE_URL": backend.url, "SUPABASE_ANON_KEY": backend.anon_key}

    # 5. the two syncs, as an operator runs them (cron-style: flags + environment, JSON report)
    common = ["--env-file", str(empty_env), "--json"]
    ome_env = {
        **dsm,
        "DSM_API_TOKEN": token,
        "OME_HOST": ome["url"],
        "OME_USERNAME": ome["username"],
        "OME_PASSWORD": ome["password"],
        "OME_CA_BUNDLE": ome["ca_file"],
    }
    ome_run = run_program(
        stack,
        "openmanage-sync-script.py",
        [
            str(ROOT / "openmanage-sync-script.py"),
            *common,
            "--inventory",
            "--lock-file",
            str(work / "ome.lock"),
        ],
        ome_env,
        work,
        timeout=120,
    )
    summary["ome"] = ome_run
    _say(started, "openmanage-sync-script.py exit %s in %.1f s", ome_run.code, ome_run.seconds)
    vc_env = {**dsm, "DSM_EMAIL": email, "DSM_PASSWORD": password, "VCENTER_ID": str(vcenter_id), **vc.env()}
    vc_run = run_program(
        stack,
        "vcenter-sync-script.py",
        [str(ROOT / "vcenter-sync-script.py"), *common, "--lock-file", str(work / "vc.lock")],
        vc_env,
        work,
        timeout=120,
    )
    summary["vcenter"] = vc_run
    _say(started, "vcenter-sync-script.py exit %s in %.1f s", vc_run.code, vc_run.seconds)
    counts = backend.sql(
        "SELECT (SELECT count(*) FROM servers) AS servers,"
        " (SELECT count(*) FROM servers WHERE ip_address LIKE '127.0.0.1:%%') AS reachable,"
        " (SELECT count(*) FROM vcenter_hosts) AS hosts,"
        " (SELECT count(*) FROM vcenter_hosts WHERE server_id IS NOT NULL) AS linked"
    )[0]
    summary.update(counts)

    # 6. jobs as the UI writes them, then the executor
    reachable = backend.sql(
        "SELECT id::text, service_tag, ip_address FROM servers WHERE ip_address LIKE '127.0.0.1:%%' ORDER BY hostname"
    )
    jobs = Jobs(backend)
    if reachable:
        ids = [r["id"] for r in reachable]
        jobs.add(
            "power_action GracefulRestart, 3 servers",
            "power_action",
            {"type": "specific", "server_ids": ids[:3]},
            {"action": "GracefulRestart"},
        )
        jobs.add(
            "power_action On (already on), 2 servers",
            "power_action",
            {"server_ids": ids[3:5]},
            {"action": "On"},
        )
        jobs.add(f"health_check, {len(ids)} servers", "health_check", {"server_ids": ids}, None)
        jobs.add(
            f"test_credentials {reachable[0]['ip_address']}",
            "test_credentials",
            {},
            {"ip_address": reachable[0]["ip_address"], "credential_set_id": str(good)},
        )
        jobs.add(
            f"test_credentials {reachable[1]['ip_address']} with a stale password (expected to fail)",
            "test_credentials",
            {},
            {"ip_address": reachable[1]["ip_address"], "credential_set_id": str(stale)},
            expect="failed",
        )
    jobs.add_sync_jobs(vcenter_id)
    summary["jobs"] = jobs
    executor_env = {
        "SUPABASE_URL": backend.url,
        "SUPABASE_SERVICE_ROLE_KEY": backend.service_role_key,
        "EXECUTOR_ID": "executor-demo",
        "EXECUTOR_POLL_INTERVAL": "0.2",
        "EXECUTOR_HEARTBEAT_SECONDS": "2",
        "EXECUTOR_MAX_CONCURRENT_JOBS": "4",
        "EXECUTOR_DRAIN_SECONDS": "5",
        "IDRAC_CA_BUNDLE": idracs["ca_file"],
        "POWER_POLL_SECONDS": "0.3",
        "OME_CA_BUNDLE": ome["ca_file"],
        "VCENTER_CA_BUNDLE": vc.cert_file,
    }
    deadline = time.monotonic() + 120
    runs = 0
    while jobs.unfinished() and time.monotonic() < deadline:
        runs += 1
        ex = run_program(
            stack,
            "job-executor.py --once",
            [str(ROOT / "job-executor.py"), "--env-file", str(empty_env), "--once"],
            executor_env,
            work,
            timeout=max(5.0, deadline - time.monotonic()),
        )
        _say(started, "job-executor.py --once exit %s in %.1f s", ex.code, ex.seconds)
        summary["executor"] = ex
        if ex.code not in (0, None):
            break
    jobs.refresh()
    summary["executor_runs"] = runs
    summary["ok"] = (
        ome_run.code == 0
        and vc_run.code == 0
        and int(counts["servers"]) > 0
        and int(counts["linked"]) > 0
        and jobs.all_as_expected()
    )


def _print_summary(s: dict[str, Any], out: Any) -> None:
    w = out.write
    w("\nDSM on-prem agent demo (everything on 127.0.0.1)\n")
    ome, vc = s.get("ome"), s.get("vcenter")
    if ome is not None:
        w(f"OpenManage sync: {ome.describe()}\n")
    if vc is not None:
        w(f"vCenter sync:    {vc.describe()}\n")
    w(f"servers synced: {s.get('servers', 0)} ({s.get('reachable', 0)} with a simulated iDRAC)\n")
    w(f"hosts linked: {s.get('linked', 0)} of {s.get('hosts', 0)} ESXi hosts\n")
    jobs: Jobs = s["jobs"]
    ex = s.get("executor")
    runs = f"{s.get('executor_runs', 0)} run(s) of job-executor.py --once"
    w(f"jobs ({runs}{f', exit {ex.code}' if ex is not None else ''}):\n")
    for line in jobs.lines():
        w(f"  {line}\n")
    verdict = "all as expected" if jobs.all_as_expected() else "NOT as expected"
    w(f"jobs: {jobs.done_count()} of {len(jobs)} finished, {verdict}\n")
    w(f"cleanup: stopped {', '.join(s.get('stopped', [])) or 'nothing'}\n")
    w(f"demo {'succeeded' if s.get('ok') else 'FAILED'} in {s.get('elapsed', 0):.1f} s\n")
    out.flush()


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="demo: %(message)s", stream=sys.stderr
    )
    interrupts.install()
    try:
        return run_demo()
    except KeyboardInterrupt:
        print("demo: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # the one boundary: say what broke, after cleanup has run
        log.error("demo failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return 1


if __name__ == "__main__":
    sys.exit(main())
