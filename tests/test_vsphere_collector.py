"""lib/vsphere.py against a fake paging property collector, through pyVmomi's real calling path.

Debian's vcsim never pages RetrievePropertiesEx, a real vCenter does: these tests drive the
ContinueRetrievePropertiesEx loop with a stub that answers in pages of `maxObjects`, and resolve
clusters and datacenters from the parent chain of the collected data.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyVmomi import vim, vmodl

from lib.vsphere import PROPERTY_PATHS, AboutInfo, build_inventory, collect, retrieve_pages, serial_from

PC = vmodl.query.PropertyCollector


def oc(obj: Any, **props: Any) -> Any:
    prop_set = [vmodl.DynamicProperty(name=k.replace("__", "."), val=v) for k, v in props.items()]
    return PC.ObjectContent(obj=obj, propSet=prop_set)


def system_info(serial: str | None, tag: str | None) -> Any:
    ident = []
    if tag is not None:
        ident.append(
            vim.host.SystemIdentificationInfo(
                identifierValue=tag,
                identifierType=vim.ElementDescription(key="ServiceTag", label="", summary=""),
            )
        )
    return vim.host.SystemInfo(
        vendor="Dell Inc.", model="PowerEdge R750", uuid="u", serialNumber=serial, otherIdentifyingInfo=ident
    )


def inventory_objects() -> list[Any]:
    """Two datacenters; DC-A has a cluster inside a nested host folder and a standalone host."""
    root = vim.Folder("group-d1")
    dc_a, dc_b = vim.Datacenter("datacenter-1"), vim.Datacenter("datacenter-2")
    hf_a, hf_b = vim.Folder("group-h4"), vim.Folder("group-h5")
    prod = vim.Folder("group-h10")
    cl_a, cl_b = vim.ClusterComputeResource("domain-c7"), vim.ClusterComputeResource("domain-c8")
    standalone = vim.ComputeResource("domain-s9")
    cfg = vim.cluster.ConfigInfoEx(
        dasConfig=vim.cluster.DasConfigInfo(enabled=True),
        drsConfig=vim.cluster.DrsConfigInfo(enabled=True, defaultVmBehavior="fullyAutomated"),
    )

    def host(
        moid: str, name: str, parent: Any, serial: str | None, tag: str | None, maint: bool = False
    ) -> Any:
        return oc(
            vim.HostSystem(moid),
            name=name,
            parent=parent,
            hardware__systemInfo=system_info(serial, tag),
            summary__config__product__version="8.0.2",
            summary__config__product__build="22380479",
            runtime__connectionState="connected",
            runtime__powerState="poweredOn",
            runtime__inMaintenanceMode=maint,
            summary__hardware__memorySize=512 * 2**30,
        )

    return [
        oc(root, name="Datacenters"),
        oc(dc_a, name="DC-A", parent=root),
        oc(dc_b, name="DC-B", parent=root),
        oc(hf_a, name="host", parent=dc_a),
        oc(hf_b, name="host", parent=dc_b),
        oc(prod, name="Prod", parent=hf_a),
        oc(
            cl_a,
            name="Cluster-A",
            parent=prod,
            configurationEx=cfg,
            summary__numHosts=2,
            overallStatus="green",
        ),
        oc(cl_b, name="Cluster-B", parent=hf_b, summary__numHosts=1, overallStatus="yellow"),
        oc(standalone, name="esx-solo.lab", parent=hf_a),
        host("host-1", "esx-a1.lab", cl_a, "ABC1234", "ABC1234"),
        host("host-2", "esx-a2.lab", cl_a, "", "DEF5678", maint=True),  # serial only in ServiceTag
        host("host-3", "esx-solo.lab", standalone, "GHJ9012", None),
        host("host-4", "esx-b1.lab", cl_b, None, None),  # no serial at all
    ]


class PagingStub:
    """Answers pyVmomi method calls like a vCenter that pages property results."""

    def __init__(self, objects: list[Any], *, fail_on_continue: int | None = None) -> None:
        self.objects = objects
        self.calls: list[tuple[str, Any]] = []
        self.pages: dict[str, list[Any]] = {}
        self.fail_on_continue = fail_on_continue

    def InvokeMethod(self, mo: Any, info: Any, args: Any) -> Any:
        name = info.wsdlName
        self.calls.append((name, args))
        if name == "RetrievePropertiesEx":
            _spec_set, options = args
            size = options.maxObjects or len(self.objects)
            chunks = [self.objects[i : i + size] for i in range(0, len(self.objects), size)]
            return self._page(chunks)
        if name == "ContinueRetrievePropertiesEx":
            (token,) = args
            if self.fail_on_continue is not None and len(self.calls) >= self.fail_on_continue:
                raise vmodl.fault.ManagedObjectNotFound(msg="boom")
            return self._page(self.pages.pop(token))
        if name in ("DestroyView", "CancelRetrievePropertiesEx"):
            if name == "CancelRetrievePropertiesEx":
                self.pages.pop(args[0])
            return None
        if name == "CreateContainerView":
            return vim.view.ContainerView("session[1]view-1", self)
        raise AssertionError(f"unexpected call {name}")

    def _page(self, chunks: list[list[Any]]) -> Any:
        first, rest = chunks[0], chunks[1:]
        token = None
        if rest:
            token = f"token-{len(self.calls)}"
            self.pages[token] = rest
        return PC.RetrieveResult(objects=first, token=token)

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


class FakeContent:
    def __init__(self, stub: PagingStub) -> None:
        self.rootFolder = vim.Folder("group-d1", stub)
        self.viewManager = vim.view.ViewManager("ViewManager", stub)
        self.propertyCollector = vmodl.query.PropertyCollector("propertyCollector", stub)


ABOUT = AboutInfo(name="vCenter", api_type="VirtualCenter", version="8.0.2", build="1", instance_uuid=None)


def test_retrieve_pages_follows_every_token_and_returns_every_object() -> None:
    objects = inventory_objects()
    stub = PagingStub(objects)
    pc = vmodl.query.PropertyCollector("propertyCollector", stub)
    pages = list(retrieve_pages(pc, [PC.FilterSpec()], max_objects=3))
    assert [len(p) for p in pages] == [3, 3, 3, 3, 1]
    assert [r["_moref"] for p in pages for r in p] == [o.obj._moId for o in objects]
    assert stub.names() == ["RetrievePropertiesEx"] + ["ContinueRetrievePropertiesEx"] * 4
    # each Continue carries the token the previous page returned, and no token is left open
    assert stub.pages == {}


def test_stopping_early_cancels_the_open_result_set() -> None:
    stub = PagingStub(inventory_objects())
    pc = vmodl.query.PropertyCollector("propertyCollector", stub)
    pages = retrieve_pages(pc, [PC.FilterSpec()], max_objects=5)
    next(pages)
    pages.close()
    assert stub.names() == ["RetrievePropertiesEx", "CancelRetrievePropertiesEx"]
    assert stub.pages == {}


def test_collect_uses_one_view_one_filter_and_destroys_the_view_even_on_failure() -> None:
    stub = PagingStub(inventory_objects(), fail_on_continue=3)
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        collect(FakeContent(stub), max_objects=4)
    assert stub.names()[0] == "CreateContainerView"
    assert stub.names()[-1] == "DestroyView"

    stub = PagingStub(inventory_objects())
    rows, pages = collect(FakeContent(stub), max_objects=4)
    assert pages == 4
    assert stub.names().count("CreateContainerView") == 1 and stub.names().count("DestroyView") == 1
    _, view_types, recursive = stub.calls[0][1]
    assert {t._wsdlName for t in view_types} == {"Datacenter", "Folder", "ComputeResource", "HostSystem"}
    assert recursive is True
    spec = stub.calls[1][1][0][0]
    asked = {ps.type._wsdlName: list(ps.pathSet) for ps in spec.propSet}
    assert asked == {t._wsdlName: list(p) for t, p in PROPERTY_PATHS.items()}
    assert all(not ps.all for ps in spec.propSet)  # never "all properties"
    assert rows["host-1"]["parent"] == "domain-c7"  # references become plain ids


def test_paged_and_unpaged_reads_give_the_same_inventory() -> None:
    rows1, _ = collect(FakeContent(PagingStub(inventory_objects())))
    rows3, pages = collect(FakeContent(PagingStub(inventory_objects())), max_objects=1)
    assert pages == len(inventory_objects())
    assert build_inventory(rows1, ABOUT) == build_inventory(rows3, ABOUT, pages=1)


def test_parent_chain_gives_cluster_and_datacenter_through_nested_folders() -> None:
    rows, _ = collect(FakeContent(PagingStub(inventory_objects())), max_objects=2)
    inv = build_inventory(rows, ABOUT)
    hosts = {h.name: h for h in inv.hosts}
    assert (hosts["esx-a1.lab"].cluster, hosts["esx-a1.lab"].cluster_moref) == ("Cluster-A", "domain-c7")
    assert (hosts["esx-a1.lab"].datacenter, hosts["esx-a1.lab"].datacenter_moref) == ("DC-A", "datacenter-1")
    assert hosts["esx-b1.lab"].cluster == "Cluster-B" and hosts["esx-b1.lab"].datacenter == "DC-B"
    solo = hosts["esx-solo.lab"]
    assert solo.cluster is None and solo.cluster_moref is None and solo.datacenter == "DC-A"
    assert hosts["esx-a2.lab"].maintenance_mode is True and hosts["esx-a1.lab"].maintenance_mode is False
    assert hosts["esx-a1.lab"].memory_gb == 512 and hosts["esx-a1.lab"].esxi_build == "22380479"

    clusters = {c.name: c for c in inv.clusters}
    a = clusters["Cluster-A"]
    assert (a.datacenter, a.ha_enabled, a.drs_enabled, a.drs_automation_level) == (
        "DC-A",
        True,
        True,
        "fullyAutomated",
    )
    assert a.host_count == 2 and a.overall_status == "green"
    b = clusters["Cluster-B"]
    assert b.datacenter == "DC-B" and b.ha_enabled is None and b.host_count == 1
    assert [d.name for d in inv.datacenters] == ["DC-A", "DC-B"]


def test_serial_number_falls_back_to_the_service_tag() -> None:
    rows, _ = collect(FakeContent(PagingStub(inventory_objects())))
    serials = {h.name: h.serial_number for h in build_inventory(rows, ABOUT).hosts}
    assert serials == {
        "esx-a1.lab": "ABC1234",
        "esx-a2.lab": "DEF5678",
        "esx-solo.lab": "GHJ9012",
        "esx-b1.lab": None,
    }
    assert serial_from(system_info("To Be Filled By O.E.M.", "7XK2M93")) == "7XK2M93"
    assert serial_from(system_info(" ", " ")) is None


def test_broken_or_cyclic_parent_chains_do_not_hang_or_crash() -> None:
    rows = {
        "host-9": {"_moref": "host-9", "_type": "HostSystem", "name": "orphan", "parent": "domain-c404"},
        "host-8": {"_moref": "host-8", "_type": "HostSystem", "name": "loop", "parent": "group-x"},
        "group-x": {"_moref": "group-x", "_type": "Folder", "parent": "group-y"},
        "group-y": {"_moref": "group-y", "_type": "Folder", "parent": "group-x"},
    }
    hosts = {h.name: h for h in build_inventory(rows, ABOUT).hosts}
    assert hosts["orphan"].datacenter is None and hosts["orphan"].cluster is None
    assert hosts["loop"].datacenter is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("vc.example.com", ("vc.example.com", 443)),
        ("vc.example.com:8443", ("vc.example.com", 8443)),
        ("https://vc.example.com/sdk", ("vc.example.com", 443)),
        ("https://vc.example.com:9443/sdk", ("vc.example.com", 9443)),
        ("fe80::1", ("fe80::1", 443)),
        ("[fe80::1]", ("fe80::1", 443)),
    ],
)
def test_vcenter_host_accepts_names_host_port_and_urls(given: str, expected: tuple[str, int]) -> None:
    from lib.vsphere import split_host

    assert split_host(given, 443) == expected


def test_probe_speaks_with_lib_checks_words() -> None:
    """The connect probe before pyVmomi is lib.checks' (one wording for a run and for --check)."""
    import socket

    from lib.checks import tcp_check
    from lib.errors import ConnectRefusedError
    from lib.http import TLSConfig
    from lib.vsphere import endpoint, probe

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    tls = TLSConfig(env_prefix="VCENTER")
    with pytest.raises(ConnectRefusedError) as from_probe:
        probe("127.0.0.1", port, tls, 2.0)
    with pytest.raises(ConnectRefusedError) as from_check:
        tcp_check(endpoint("127.0.0.1", port, tls), timeout=2.0)
    assert (from_probe.value.message, from_probe.value.hint) == (
        from_check.value.message,
        from_check.value.hint,
    )
    assert "VCENTER_PORT" in from_probe.value.hint
