"""Benchmark: the vCenter read of the sync against the lab vcsim, side by side with a naive read.

    python -m bench.vcenter_sync_bench                    # 1x2x4 and 2x4x16 (8 VMs per host)
    python -m bench.vcenter_sync_bench --sizes 2x8x32x8   # DCs x clusters x hosts-per-cluster x VMs-per-host

"ours" is lib.vsphere (one ContainerView, one RetrievePropertiesEx with exact paths, parent chains
resolved locally), the code path of vcenter-sync-script.py. "naive" reads the same host fields
attribute by attribute, as the old script did (every `host.x` is a PropertyCollector call in pyVmomi).
Round trips are counted at the transport: every HTTP request pyVmomi sends (http.client), the
login and logout included. Both reads start from a fresh login and must return the same data.

Targets (issue 5): round trips independent of the number of hosts (at most 10), and at least 10x
faster than naive on the same vcsim. The exit code is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lab.vcsim import Vcsim, start
from lib.config import VcenterSettings
from lib.http import TLSConfig
from lib.vsphere import VSphereClient

ROUND_TRIP_TARGET = 10
SPEEDUP_TARGET = 10.0


@contextmanager
def counting_requests() -> Iterator[list[int]]:
    """Count every HTTP request http.client sends (pyVmomi's transport) while inside."""
    counter = [0]
    original = http.client.HTTPConnection.request

    def request(self: http.client.HTTPConnection, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(self, *args, **kwargs)

    http.client.HTTPConnection.request = request  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        http.client.HTTPConnection.request = original  # type: ignore[method-assign]


def settings_for(sim: Vcsim) -> VcenterSettings:
    tls = TLSConfig(verify=True, ca_bundle=sim.cert_file, env_prefix="VCENTER")
    return VcenterSettings(sim.host, sim.port, sim.user, sim.password, tls, None, 500)


def ours(sim: Vcsim) -> dict[str, tuple]:
    with VSphereClient(settings_for(sim)) as client:
        inv = client.inventory()
    return {
        h.moref: (
            h.name,
            h.cluster,
            h.datacenter,
            h.serial_number,
            h.esxi_version,
            h.esxi_build,
            h.connection_state,
            h.maintenance_mode,
            h.power_state,
            h.cpu_cores,
            h.memory_bytes,
        )
        for h in inv.hosts
    }


def naive(sim: Vcsim) -> dict[str, tuple]:
    """The old way: a view of hosts, then attribute by attribute (each one a round trip)."""
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    si = SmartConnect(
        host=sim.host,
        port=sim.port,
        user=sim.user,
        pwd=sim.password,
        sslContext=settings_for(sim).tls.ssl_context(),
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        out: dict[str, tuple] = {}
        for host in view.view:
            parent = host.parent
            cluster = parent.name if isinstance(parent, vim.ClusterComputeResource) else None
            node = parent
            while node is not None and not isinstance(node, vim.Datacenter):
                node = node.parent
            serial = host.hardware.systemInfo.serialNumber or None
            if not serial:
                for ident in host.hardware.systemInfo.otherIdentifyingInfo:
                    if ident.identifierType.key == "ServiceTag":
                        serial = ident.identifierValue
            out[host._moId] = (
                host.name,
                cluster,
                node.name if node is not None else None,
                serial,
                host.summary.config.product.version,
                host.summary.config.product.build,
                str(host.runtime.connectionState),
                bool(host.runtime.inMaintenanceMode),
                str(host.runtime.powerState),
                host.summary.hardware.numCpuCores,
                host.summary.hardware.memorySize,
            )
        view.DestroyView()
        return out
    finally:
        Disconnect(si)


def measure(fn: Callable[[Vcsim], dict[str, tuple]], sim: Vcsim, repeats: int) -> tuple[float, int, dict]:
    times, trips, result = [], 0, {}
    for _ in range(repeats):
        with counting_requests() as counter:
            t0 = time.perf_counter()
            result = fn(sim)
            times.append(time.perf_counter() - t0)
        trips = counter[0]
    return statistics.median(times), trips, result


def parse_size(text: str) -> tuple[int, int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 3:
        parts.append(8)
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("size is DCsxCLUSTERSxHOSTS[xVMS], e.g. 2x4x16x8")
    return parts[0], parts[1], parts[2], parts[3]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", nargs="+", type=parse_size, default=[parse_size("1x2x4x2"), parse_size("2x4x16x8")]
    )
    p.add_argument("--standalone", type=int, default=1, help="standalone hosts per datacenter")
    p.add_argument("--repeats", type=int, default=3, help="runs of 'ours' per size (median); naive runs once")
    a = p.parse_args()

    rows = []
    ok = True
    for dcs, clusters, hosts, vms in a.sizes:
        t0 = time.perf_counter()
        with start(
            datacenters=dcs,
            clusters=clusters,
            hosts_per_cluster=hosts,
            standalone_hosts=a.standalone,
            vms_per_host=vms,
        ) as sim:
            print(
                f"vcsim {dcs}x{clusters}x{hosts}, {vms} VMs/host ready in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
            t_ours, n_ours, r_ours = measure(ours, sim, a.repeats)
            t_naive, n_naive, r_naive = measure(naive, sim, 1)
        if r_ours != r_naive:
            diff = [m for m in set(r_ours) | set(r_naive) if r_ours.get(m) != r_naive.get(m)]
            print(
                f"MISMATCH between ours and naive for {len(diff)} host(s), e.g. {diff[:3]}", file=sys.stderr
            )
            ok = False
        n_hosts = len(r_ours)
        speedup = t_naive / t_ours if t_ours else float("inf")
        ok = ok and n_ours <= ROUND_TRIP_TARGET and speedup >= SPEEDUP_TARGET
        rows.append(
            (f"{dcs}x{clusters}x{hosts}", n_hosts, n_hosts * vms, n_ours, n_naive, t_ours, t_naive, speedup)
        )

    head = ("inventory", "hosts", "VMs", "trips ours", "trips naive", "s ours", "s naive", "speedup")
    print(" | ".join(f"{h:>11}" for h in head))
    print("-+-".join("-" * 11 for _ in head))
    for r in rows:
        print(
            " | ".join(f"{v:>11.3f}" if isinstance(v, float) else f"{v:>11}" for v in r[:-1])
            + f" | {r[-1]:>10.1f}x"
        )
    trips = {r[3] for r in rows}
    print(
        f"\nround trips of ours: {sorted(trips)} (target: the same for every size, <= {ROUND_TRIP_TARGET}); "
        f"speedup target >= {SPEEDUP_TARGET:g}x: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok and len(trips) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
