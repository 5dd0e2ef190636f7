"""Delivery to a DSM edge function, shared by both syncs (one code path, not a copy per sync).

`connect_dsm` chooses the credential (lib.dsm.auth.choose_auth) and proves it with a request that
writes nothing, so a bad DSM credential fails before the source system is touched;
`edge_batch_sender` turns one batch into one request and the function's reply into a
`BatchOutcome` through a per-function judge; `SyncReport.absorb` fills the report from the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from lib.errors import RemoteError
from lib.sync.delivery import BatchOutcome

if TYPE_CHECKING:
    from lib.config import DsmSettings
    from lib.dsm.auth import DsmAuth
    from lib.dsm.edge import EdgeClient

log = logging.getLogger(__name__)
T = TypeVar("T")
Judge = Callable[[dict[str, Any]], BatchOutcome]

# Answers that mean "this batch was refused" (so splitting it can save the rest), as opposed to
# the backend being unreachable or misconfigured (404, gateway errors), which stop the run.
BATCH_REFUSED_STATUSES = frozenset({400, 409, 422, 500})

# A body each function accepts and saves nothing from: the credential probe. openmanage-sync
# answers an empty list with 400 once the credentials passed (CONTRACT.md 1); vcenter-sync answers
# 200 with nothing to do (a body without vcenter_id and job_id touches no row).
PROBE_BODIES: dict[str, dict[str, Any]] = {
    "openmanage-sync": {"devices": []},
    "vcenter-sync": {"hosts": []},
}


def judge_reply(reply: dict[str, Any], *, whole_batch_failed: str | None = None) -> BatchOutcome:
    """The verdict on one batch from a `{"success", "summary", "errors"}` reply.

    `success: false` fails the batch. `whole_batch_failed` is a prefix of an `errors` entry that
    means nothing was saved although the reply says success (openmanage-sync's "Bulk upsert
    failed:" TRAP, CONTRACT.md 1); other `errors` entries name single records of a saved batch."""
    if reply.get("success") is False:
        return BatchOutcome.failed(str(reply.get("error") or "the backend reported success: false"))
    errors = [str(e) for e in reply.get("errors") or []]
    if whole_batch_failed:
        fatal = [e for e in errors if e.startswith(whole_batch_failed)]
        if fatal:
            return BatchOutcome.failed(fatal[0])
    summary = reply.get("summary") if isinstance(reply.get("summary"), dict) else {}

    def count(name: str) -> int:
        value = summary.get(name)
        return value if isinstance(value, int) else 0

    return BatchOutcome(
        ok=True,
        new=count("new"),
        updated=count("updated"),
        auto_linked=count("auto_linked"),
        item_errors=errors,
    )


def edge_batch_sender(
    edge: EdgeClient | Any,
    function: str,
    body: Callable[[list[T]], dict[str, Any]],
    judge: Judge,
) -> Callable[[list[T]], BatchOutcome]:
    """A batch sender for `deliver`: one POST per batch. Both functions upsert by a natural key
    (service tag, host moref), so a repeated request changes nothing more: retried as idempotent.
    A refusal (BATCH_REFUSED_STATUSES) fails the batch, so it is split; anything else (auth,
    connection, 404) raises and ends the run."""

    def send(batch: list[T]) -> BatchOutcome:
        try:
            reply = edge.call(function, body(batch), idempotent=True)
        except RemoteError as exc:
            if exc.status in BATCH_REFUSED_STATUSES:
                return BatchOutcome.failed(exc.remote_message or exc.message)
            raise
        return judge(reply)

    return send


def probe_credentials(edge: EdgeClient | Any, function: str) -> None:
    """One signed/authenticated request that writes nothing: 401/403 raise AuthError (exit 3)."""
    try:
        edge.call(function, PROBE_BODIES[function], idempotent=True)
    except RemoteError as exc:
        if exc.status != 400:  # an empty list is refused only after the credentials passed
            raise


def connect_dsm(dsm: DsmSettings, function: str, *, probe: bool = True) -> tuple[EdgeClient, DsmAuth]:
    """The edge client for `function` with the chosen credential, checked before anything else."""
    from lib.dsm.auth import choose_auth
    from lib.dsm.edge import EdgeClient

    auth = choose_auth(dsm, function)
    edge = EdgeClient(dsm, auth=auth.mode, jwt=auth.jwt)
    try:
        if probe:
            probe_credentials(edge, function)
    except BaseException:
        edge.close()
        raise
    return edge, auth


def with_dsm(dsm: DsmSettings | None, function: str, run: Callable[[EdgeClient | None], None]) -> None:
    """Run `run` with an edge client whose DSM credential was proven first, so a DSM mistake fails
    before the source (OME, vCenter) is touched; with no DSM settings (a dry run), with None."""
    if dsm is None:
        run(None)
        return
    edge, auth = connect_dsm(dsm, function)
    log.info("DSM: %s", auth.described)
    with edge:
        run(edge)
