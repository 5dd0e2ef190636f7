"""Benchmark of workflow 1: openmanage-sync-script.py syncing N devices from lab/ome_sim (HTTP)
into the lab backend. Prints a table: wall time of the whole sync process (start-up and imports
included), its peak RSS, OME requests (counted by the simulator) and backend requests.

    python -m bench.ome_sync_bench [--sizes 1000 10000] [--page-size 200] [--batch-size 200] [--dry-run]

Targets (issue 4): 10,000 devices in <= 3 s wall, <= 120 MB peak RSS, OME requests <= ceil(N/page)+3.
With --dry-run (or when the backend has no openmanage-sync function) nothing is sent and the
backend column says so. Only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "openmanage-sync-script.py"


def start_sim(devices: int) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.ome_sim", "--devices", str(devices), "--http"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def sim_call(url: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(url + path, method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
        body = resp.read()
    return json.loads(body) if body else {}


def run_sync(env: dict[str, str], args: list[str]) -> tuple[float, int, int, dict, str]:
    """Run the script once; wall seconds, peak RSS (KiB) of that process, exit code, report, stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read().strip()
        return wall, usage.ru_maxrss, proc.returncode, json.loads(text) if text else {}, err.read()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--page-size", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--dry-run", action="store_true", help="do not send to the backend")
    args = p.parse_args(argv)

    backend = None
    token = None
    if not args.dry_run:
        sys.path.insert(0, str(ROOT))
        from lab.backend.launcher import start_backend

        backend = start_backend()
        token = backend.create_api_token("bench")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="ome-bench-"))
    (tmp / "empty.env").write_text("")
    try:
        for n in args.sizes:
            sim, info = start_sim(n)
            try:
                if backend is not None:
                    backend.reset()
                sim_call(info["url"], "/_sim/reset", "POST")
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "OME_HOST": info["url"],
                    "OME_USERNAME": info["username"],
                    "OME_PASSWORD": info["password"],
                    "OME_PAGE_SIZE": str(args.page_size),
                    "OME_BATCH_SIZE": str(args.batch_size),
                }
                flags = ["--env-file", str(tmp / "empty.env"), "--lock-file", str(tmp / "lock"), "--json"]
                if backend is not None:
                    env.update(
                        SUPABASE_URL=backend.url,
                        SUPABASE_ANON_KEY=backend.anon_key,
                        DSM_API_TOKEN=token or "",
                    )
                else:
                    flags.append("--dry-run")
                wall, rss_kib, code, report, stderr = run_sync(env, flags)
                stats = sim_call(info["url"], "/_sim/stats")
                saved = None
                if backend is not None:
                    saved = backend.sql("select count(*) as n from servers")[0]["n"]
                budget = math.ceil(n / args.page_size) + 3
                rows.append(
                    {
                        "devices": n,
                        "exit": code,
                        "wall_s": round(wall, 2),
                        "peak_rss_mb": round(rss_kib / 1024, 1),
                        "ome_requests": stats["requests"],
                        "ome_budget": budget,
                        "backend_requests": report.get("requests", {}).get("dsm", "-"),
                        "sent": report.get("sent"),
                        "rows_in_servers": saved if saved is not None else "-",
                        "open_sessions": stats["open_sessions"],
                    }
                )
                if code not in (0, 1):
                    print(stderr, file=sys.stderr)
            finally:
                sim.terminate()
                sim.wait(10)
    finally:
        if backend is not None:
            backend.close()

    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).rjust(widths[c]) for c in cols))
    print("targets for 10,000: wall_s <= 3, peak_rss_mb <= 120, ome_requests <= ome_budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
