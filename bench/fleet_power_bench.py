"""One power_action job on N simulated iDRACs whose power changes take D seconds.

Runs against the lab backend (its own throw-away database) and lab.idrac_sim over HTTPS, with the
executor's runner in process. Prints the single-server time, the fleet wall time, the target
(2 x N / concurrency x single) and the largest number of sessions ever open on one BMC.

    python -m bench.fleet_power_bench [--servers 100] [--power-delay 2] [--concurrency 4]
                                      [--action GracefulShutdown|ForceRestart|...]

ForceRestart and GracefulRestart are verified restarts (LastResetTime/BootProgress must change).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import uuid

from lab.backend.launcher import start_backend
from lab.idrac_sim import IdracFleet
from lib.dsm.credentials import CredentialResolver, encrypt_password
from lib.dsm.rest import RestClient
from lib.executor.context import IdracSlots, Services
from lib.executor.runner import JobRun
from lib.executor.store import HandlerStoreImpl, JobStore

PASSWORD = "Bench-Pa55!"
KEY = base64.b64encode(bytes(range(32))).decode()


def run_power_job(backend, fleet: IdracFleet, concurrency: int, action: str) -> tuple[float, str]:
    cs = backend.sql("SELECT id FROM credential_sets LIMIT 1")[0]["id"]
    ids = []
    for bmc in fleet:
        row = backend.sql(
            "INSERT INTO servers (ip_address, service_tag, credential_set_id) VALUES (%s, %s, %s) RETURNING id",
            (bmc.address, uuid.uuid4().hex[:12], cs),
        )
        ids.append(str(row[0]["id"]))
    details = {"action": action, "poll_interval_seconds": 0.25}
    backend.sql(
        "INSERT INTO jobs (job_type, status, target_scope, details) VALUES ('power_action', 'pending', %s, %s)",
        (json.dumps({"type": "specific", "server_ids": ids}), json.dumps(details)),
    )
    rest = RestClient(backend.url, backend.service_role_key)
    store = JobStore(rest, "executor-bench", lease_seconds=60)
    services = Services(
        store,
        HandlerStoreImpl(rest, store),
        CredentialResolver(rest),
        IdracSlots(concurrency),
        "executor-bench",
    )
    t0 = time.monotonic()
    row = store.claim(["power_action"], 1)[0]
    outcome = JobRun(row, services).run()
    return time.monotonic() - t0, outcome.status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=100)
    ap.add_argument("--power-delay", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=4, help="activity_settings.idrac_max_concurrent")
    ap.add_argument("--action", default="GracefulShutdown", help="the power_action ResetType to time")
    args = ap.parse_args()
    backend = start_backend()
    fleets: list[IdracFleet] = []
    try:
        backend.sql(
            "INSERT INTO activity_settings (encryption_key, idrac_max_concurrent) VALUES (%s, %s)",
            (KEY, args.concurrency),
        )
        enc = encrypt_password(PASSWORD, base64.b64decode(KEY))
        backend.sql(
            "INSERT INTO credential_sets (name, username, password_encrypted) VALUES ('bench', 'root', %s)",
            (enc,),
        )
        one = IdracFleet(1, tls=True, password=PASSWORD, power_delay=args.power_delay)
        fleets.append(one)
        # Services (built per job) read IDRAC_* from the process environment
        os.environ["IDRAC_CA_BUNDLE"] = one.ca_file or ""
        single, st1 = run_power_job(backend, one, args.concurrency, args.action)
        one.stop()
        fleet = IdracFleet(args.servers, tls=True, password=PASSWORD, power_delay=args.power_delay)
        fleets.append(fleet)
        os.environ["IDRAC_CA_BUNDLE"] = fleet.ca_file or ""
        wall, st = run_power_job(backend, fleet, args.concurrency, args.action)
        target = 2 * (args.servers / args.concurrency) * single
        leaked = sum(fleet.sessions_open().values())
        requests_total = sum(b.stats.requests for b in fleet)
        print(f"{'measure':<40} {'value':>12}")
        print(f"{'action':<40} {args.action:>12}")
        print(f"{'servers':<40} {args.servers:>12}")
        print(f"{'power change (s)':<40} {args.power_delay:>12.1f}")
        print(f"{'iDRAC concurrency':<40} {args.concurrency:>12}")
        print(f"{'single-server job (s), status ' + st1:<40} {single:>12.2f}")
        print(f"{'fleet job wall time (s), status ' + st:<40} {wall:>12.2f}")
        print(f"{'target: 2 x N/concurrency x single (s)':<40} {target:>12.2f}")
        print(f"{'within target':<40} {('yes' if wall <= target else 'NO'):>12}")
        print(f"{'max sessions ever open on one BMC':<40} {fleet.max_sessions_ever():>12}")
        print(f"{'sessions left open (all BMCs)':<40} {leaked:>12}")
        print(f"{'Redfish requests (all BMCs)':<40} {requests_total:>12}")
        return 0 if st == "completed" and fleet.max_sessions_ever() <= 1 and leaked == 0 else 1
    finally:
        for f in fleets:
            f.stop()
        backend.close()


if __name__ == "__main__":
    raise SystemExit(main())
