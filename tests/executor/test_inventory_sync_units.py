"""vcenter_sync handler units with a stand-in context: an unexpected (non-AgentError) failure of one
vCenter is recorded on its row, redacted, and the other vCenters are still synced."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

import lib.sync.vcenter as vcenter_mod
from handlers.inventory_sync import VcenterSyncHandler
from lib.errors import PartialError

SECRET = "Vc-Passw0rd-Leak!"


class Ctx:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str | None]] = []
        self.lines: list[str] = []
        self.result: dict[str, Any] = {}
        self.job = SimpleNamespace(id="job-1")
        self.settings = SimpleNamespace(sync=SimpleNamespace(vcenter_ca_bundle=None, vcenter_batch_size=50))
        self.store = SimpleNamespace(
            vcenter_table_sink=lambda _id: SimpleNamespace(send=lambda batch: None),
            record_vcenter_sync=lambda vid, status, error: self.recorded.append((vid, status, error)),
        )

    def step(self, name: str, retry_safe: bool = True) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def check(self) -> None:
        pass

    def progress(self, percent: float) -> None:
        pass

    def log(self, msg: str, level: str = "INFO") -> None:
        self.lines.append(msg)

    def set_result(self, **kw: Any) -> None:
        self.result.update(kw)


def conn(vid: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(
        id=vid,
        name=name,
        host=f"{name}.lab",
        port=443,
        username="u",
        password=SECRET,
        verify_ssl=True,
        problem=None,
        label=f"{name} ({name}.lab)",
    )


def test_an_unexpected_error_in_one_vcenter_is_recorded_and_the_others_are_synced(monkeypatch):
    synced: list[str] = []

    def fake_sync(vc, sink, options, report, progress=None):
        if vc.vcenter_id == "vc-1":
            raise KeyError(f"bad property in answer from https://u:{SECRET}@vc1.lab/sdk")
        synced.append(vc.vcenter_id)
        return SimpleNamespace(datacenters=[], clusters=[], hosts=[])

    monkeypatch.setattr(vcenter_mod, "sync_vcenter", fake_sync)
    ctx = Ctx()
    with pytest.raises(PartialError) as err:
        VcenterSyncHandler().execute(ctx, {"conns": [conn("vc-1", "one"), conn("vc-2", "two")]})
    assert synced == ["vc-2"], "the second vCenter is synced after the first one's bug"
    by_id = {vid: (status, error) for vid, status, error in ctx.recorded}
    assert by_id["vc-1"][0] == "failed" and "unexpected KeyError" in by_id["vc-1"][1]
    assert by_id["vc-2"] == ("success", None)
    assert "1 of 2 vCenter(s)" in err.value.message
    everything = repr((ctx.recorded, ctx.lines, ctx.result, err.value.message))
    assert SECRET not in everything
