"""Start the lab vcsim on a free loopback port, read the URL it prints, stop it.

    from lab.vcsim import start
    with start(datacenters=2, clusters=4, hosts_per_cluster=16) as sim:
        print(sim.host, sim.port, sim.user, sim.password, sim.cert_file)
        sim.enter_maintenance_mode("DC0_C0_H0")

    python -m lab.vcsim.launcher --dc 2 --cluster 2   # runs until Ctrl-C (for demos)

The test helpers here (`enter_maintenance_mode`, `inventory`) talk to vcsim with plain pyVmomi,
independently of lib/vsphere.py, so tests do not check our client with itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import select
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from lab.vcsim.build import build

DEFAULT_USER = "administrator@vsphere.local"


@dataclass
class Vcsim:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    url: str
    cert_file: str
    process: subprocess.Popen[bytes] = field(repr=False)
    workdir: str = field(repr=False, default="")

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self.workdir:
            for name in os.listdir(self.workdir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.workdir, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.workdir)

    def __enter__(self) -> Vcsim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, **extra: str) -> dict[str, str]:
        """VCENTER_* variables for a subprocess of the sync script, trusting vcsim's certificate."""
        return {
            "VCENTER_HOST": self.host,
            "VCENTER_PORT": str(self.port),
            "VCENTER_USER": self.user,
            "VCENTER_PASSWORD": self.password,
            "VCENTER_CA_BUNDLE": self.cert_file,
            "VCENTER_VERIFY_SSL": "true",
            **extra,
        }

    # -- test helpers (plain pyVmomi) ---------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        from pyVim.connect import Disconnect, SmartConnect

        ctx = ssl.create_default_context(cafile=self.cert_file)
        si = SmartConnect(host=self.host, port=self.port, user=self.user, pwd=self.password, sslContext=ctx)
        try:
            yield si.RetrieveContent()
        finally:
            Disconnect(si)

    def _host(self, content: Any, name: str) -> Any:
        from pyVmomi import vim

        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        try:
            for host in view.view:
                if host.name == name:
                    return host
        finally:
            view.DestroyView()
        raise KeyError(f"no host named {name!r} in vcsim")

    def enter_maintenance_mode(self, name: str, *, enter: bool = True) -> None:
        from pyVim.task import WaitForTask

        with self.connect() as content:
            host = self._host(content, name)
            task = (
                host.EnterMaintenanceMode_Task(timeout=0)
                if enter
                else host.ExitMaintenanceMode_Task(timeout=0)
            )
            WaitForTask(task)

    def exit_maintenance_mode(self, name: str) -> None:
        self.enter_maintenance_mode(name, enter=False)

    def inventory(self) -> dict[str, dict[str, Any]]:
        """host name -> moref, cluster, datacenter, serial (ServiceTag), maintenance, connection state.

        Read attribute by attribute on purpose: slow, but obviously right, as a test oracle."""
        from pyVmomi import vim

        out: dict[str, dict[str, Any]] = {}
        with self.connect() as content:
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
            try:
                for host in view.view:
                    parent = host.parent
                    dc = parent
                    while dc is not None and not isinstance(dc, vim.Datacenter):
                        dc = dc.parent
                    info = host.hardware.systemInfo
                    tag = next(
                        (
                            i.identifierValue
                            for i in info.otherIdentifyingInfo
                            if i.identifierType.key == "ServiceTag"
                        ),
                        None,
                    )
                    out[host.name] = {
                        "moref": host._moId,
                        "cluster": parent.name if isinstance(parent, vim.ClusterComputeResource) else None,
                        "datacenter": dc.name if dc is not None else None,
                        "serial": tag,
                        "serial_number_field": info.serialNumber or None,
                        "maintenance_mode": bool(host.runtime.inMaintenanceMode),
                        "connection_state": str(host.runtime.connectionState),
                    }
            finally:
                view.DestroyView()
        return out


def start(
    *,
    datacenters: int = 1,
    clusters: int = 1,
    hosts_per_cluster: int = 3,
    standalone_hosts: int = 1,
    vms_per_host: int = 0,
    seed: int = 1,
    disconnected: int = 0,
    user: str = DEFAULT_USER,
    password: str | None = None,
    esx: bool = False,
    timeout: float = 180.0,
    service_tags: Sequence[str] = (),
) -> Vcsim:
    """Build (cached) and start vcsim; returns once it prints its URL.

    `service_tags` become the serials of the first hosts (by name), e.g. to match OME servers."""
    binary = build()
    password = password or "Lab-" + secrets.token_urlsafe(12)
    workdir = tempfile.mkdtemp(prefix="vcsim-")
    cert_file = os.path.join(workdir, "vcsim-ca.pem")
    log_file = open(os.path.join(workdir, "vcsim.log"), "wb")  # noqa: SIM115 - the child owns it
    args = [
        str(binary),
        f"-dc={datacenters}",
        f"-cluster={clusters}",
        f"-host={hosts_per_cluster}",
        f"-standalone-host={standalone_hosts}",
        f"-vm-per-host={vms_per_host}",
        f"-seed={seed}",
        f"-disconnected={disconnected}",
        f"-user={user}",
        f"-password={password}",
        f"-cert-out={cert_file}",
        "-exit-on-stdin-eof",  # if the test process dies, vcsim follows
    ]
    if esx:
        args.append("-esx")
    if service_tags:
        args.append("-service-tags=" + ",".join(service_tags))
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, cwd=workdir)
    log_file.close()
    try:
        url = _read_url(proc, timeout, Path(workdir) / "vcsim.log")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", f"vcsim must listen on loopback only, got {parts.hostname}"
    return Vcsim(
        host=parts.hostname,
        port=int(parts.port or 443),
        user=unquote(parts.username or user),
        password=password,
        url=parts._replace(netloc=f"{parts.hostname}:{parts.port}").geturl(),  # no credentials
        cert_file=cert_file,
        process=proc,
        workdir=workdir,
    )


def _read_url(proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vcsim exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("VCSIM_URL="):
                    return line.split("=", 1)[1].strip()
    raise TimeoutError(f"vcsim printed no URL within {timeout:g} s: {log_path.read_text()[-2000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description="Run the lab vcsim on 127.0.0.1 until Ctrl-C.")
    p.add_argument("--dc", type=int, default=1)
    p.add_argument("--cluster", type=int, default=1)
    p.add_argument("--host", type=int, default=3)
    p.add_argument("--standalone-host", type=int, default=1)
    p.add_argument("--vm-per-host", type=int, default=0)
    p.add_argument("--password", default=None)
    a = p.parse_args()
    sim = start(
        datacenters=a.dc,
        clusters=a.cluster,
        hosts_per_cluster=a.host,
        standalone_hosts=a.standalone_host,
        vms_per_host=a.vm_per_host,
        password=a.password,
    )
    print("\n".join(f"export {k}={v}" for k, v in sim.env().items()), flush=True)
    try:
        sim.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
