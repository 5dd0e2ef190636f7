"""Edge functions at /functions/v1/<name>: one module per function, one table of names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..postgrest import Response
from . import openmanage_sync, update_job, vcenter_sync
from .common import Reply, reply

if TYPE_CHECKING:
    from ..server import Backend

log = logging.getLogger("lab.backend.functions")

FUNCTIONS = {
    "openmanage-sync": openmanage_sync.handle,
    "vcenter-sync": vcenter_sync.handle,
    "update-job": update_job.handle,
}


def handle_function(
    backend: Backend, method: str, name: str, headers: dict[str, str], body: bytes
) -> Response:
    fn = FUNCTIONS.get(name)
    if fn is None:
        return reply(404, {"code": "NOT_FOUND", "message": "Requested function was not found"})
    if method != "POST":
        return reply(405, {"error": "Method not allowed"})
    try:
        return fn(backend, headers, body)
    except Reply as r:
        return reply(r.status, r.body)
    except Exception as exc:  # the function boundary answers 500 as the real functions do
        log.exception("edge function %s failed", name)
        return reply(500, {"success": False, "error": str(exc)})
