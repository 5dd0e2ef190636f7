"""Edge functions at /functions/v1/<name>: one module per function."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..postgrest import Response

if TYPE_CHECKING:
    from ..server import Backend


def handle_function(
    backend: Backend, method: str, name: str, headers: dict[str, str], body: bytes
) -> Response:
    from ..server import json_response

    return json_response(404, {"code": "NOT_FOUND", "message": "Requested function was not found"})
