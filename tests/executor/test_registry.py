"""The handler registry: explicit table, run-time registration for tests, broken modules reported."""

from __future__ import annotations

import pytest

import handlers
from handlers.base import Handler, UnknownJobType
from lib.executor.models import Job
from tests.executor import lab_handlers


class _Probe(Handler):
    job_types = ("scp_export",)

    def execute(self, ctx, params):
        return None


def test_register_unregister_and_unknown_types():
    with pytest.raises(UnknownJobType):
        handlers.get("scp_export")
    handlers.register(_Probe)
    try:
        assert isinstance(handlers.get("scp_export"), _Probe)
        assert "scp_export" in handlers.available_types()
    finally:
        handlers.unregister(["scp_export"])
    with pytest.raises(UnknownJobType):
        handlers.get("scp_export")


def test_a_broken_table_entry_is_reported_not_fatal(monkeypatch):
    monkeypatch.setitem(handlers.HANDLERS, "scp_import", "handlers.does_not_exist:Nope")
    with pytest.raises(UnknownJobType) as err:
        handlers.get("scp_import")
    assert "failed to load" in str(err.value)
    assert "scp_import" in handlers.broken_types()
    assert "scp_import" not in handlers.available_types()
    handlers._broken.pop("scp_import", None)


def test_load_extra_spec():
    try:
        added = handlers.load_extra("tests.executor.lab_handlers:HANDLERS")
        assert lab_handlers.LIGHT_TYPE in added
    finally:
        handlers.reset_extra()


def test_job_from_row_is_frozen_and_liberal():
    j = Job.from_row(
        {
            "id": "1",
            "job_type": "power_action",
            "status": "pending",
            "details": None,
            "priority": "urgent",
            "target_scope": {"server_ids": ["a"]},
        }
    )
    assert j.details == {} and j.priority.value == "normal"
    with pytest.raises(TypeError):
        j.target_scope["server_ids"] = []  # type: ignore[index]
