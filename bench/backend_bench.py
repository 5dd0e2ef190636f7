"""Benchmark of the lab backend: PostgREST reads and filtered PATCHes with 1 and 4 clients.

    python bench/backend_bench.py [--requests 600] [--database-url URL]

Prints requests per second and p50/p95 latency. The target: >= 300 req/s with 4 clients, so that
benchmarks of our programs measure our programs, not the stand-in.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from lab.backend.launcher import start_backend


def run(url: str, headers: dict[str, str], kind: str, job_ids: list[str], clients: int, total: int) -> dict:
    per_client = total // clients
    latencies: list[float] = []
    lock = threading.Lock()
    errors = [0]
    barrier = threading.Barrier(clients)

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        mine: list[float] = []
        bad = 0
        with requests.Session() as s:
            s.headers.update(headers)
            barrier.wait()
            for i in range(per_client):
                jid = rnd.choice(job_ids)
                t0 = time.perf_counter()
                if kind == "read":
                    r = s.get(
                        f"{url}/rest/v1/jobs", params={"select": "id,status,details", "id": f"eq.{jid}"}
                    )
                else:
                    r = s.patch(
                        f"{url}/rest/v1/jobs",
                        params={"id": f"eq.{jid}", "status": "eq.running"},
                        json={"details": {"progress_percent": i % 100}},
                        headers={"Prefer": "return=minimal"},
                    )
                mine.append(time.perf_counter() - t0)
                bad += r.status_code >= 400
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "kind": kind,
        "clients": clients,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p95": latencies[int(len(latencies) * 0.95) - 1] * 1000,
        "errors": errors[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=800, help="requests per scenario")
    p.add_argument("--database-url", default=None, help="existing database (default: a throwaway one)")
    args = p.parse_args()
    backend = start_backend(args.database_url)
    try:
        rows = backend.sql(
            "INSERT INTO jobs (job_type, status) SELECT 'health_check', 'running' FROM generate_series(1, 200) "
            "RETURNING id::text"
        )
        ids = [r["id"] for r in rows]
        headers = backend.headers()
        run(backend.url, headers, "read", ids, 2, 100)  # warm-up: connections, pool, caches
        results = [
            run(backend.url, headers, k, ids, c, args.requests) for k in ("read", "patch") for c in (1, 4)
        ]
    finally:
        backend.close()
    print(
        f"{'scenario':<10}{'clients':>8}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}"
    )
    for r in results:
        print(
            f"{r['kind']:<10}{r['clients']:>8}{r['requests']:>10}{r['rps']:>9.0f}{r['p50']:>9.2f}"
            f"{r['p95']:>9.2f}{r['errors']:>8}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
