"""Edge function `update-job`: executor status writes, authenticated by the HMAC of CONTRACT.md 6.

Body: {"job": {"id", "status"?, "details"? (merged into details), "started_at"?, "completed_at"?},
"tasks"?: [{"id"? | "server_id"/"vcenter_host_id", "status"?, "progress"?, "log"?, "started_at"?,
"completed_at"?}]}. A terminal job (completed, failed, cancelled) never changes: 409.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from ..postgrest import Response
from .common import Reply, gateway_claims, parse_json, reply, require_signature, service_connection

if TYPE_CHECKING:
    from ..server import Backend

TERMINAL = ("completed", "failed", "cancelled")
_TASK_FIELDS = ("status", "progress", "log", "started_at", "completed_at")

_UPDATE_JOB = """
UPDATE public.jobs SET
  status = COALESCE(%(status)s::public.job_status, status),
  details = CASE WHEN %(details)s::jsonb IS NULL THEN details
                 ELSE COALESCE(details, '{}'::jsonb) || %(details)s::jsonb END,
  started_at = COALESCE(%(started_at)s::timestamptz, started_at),
  completed_at = COALESCE(%(completed_at)s::timestamptz, completed_at)
WHERE id = %(id)s AND status::text NOT IN ('completed', 'failed', 'cancelled')
RETURNING id::text, status::text
"""


def _job_id(job: Any) -> str:
    if not isinstance(job, dict) or not job.get("id"):
        raise Reply(400, {"success": False, "error": "job.id is required"})
    try:
        return str(uuid.UUID(str(job["id"])))
    except ValueError:
        raise Reply(400, {"success": False, "error": "job.id is not a uuid"}) from None


def _write_task(conn: psycopg.Connection, job_id: str, task: dict[str, Any]) -> None:
    sets = {f: task[f] for f in _TASK_FIELDS if f in task}
    if task.get("id"):
        if not sets:
            return
        assignments = ", ".join(f"{f} = %({f})s" for f in sets)
        conn.execute(
            f"UPDATE public.job_tasks SET {assignments} WHERE id = %(tid)s AND job_id = %(jid)s",
            {**sets, "tid": str(task["id"]), "jid": job_id},
        )
        return
    cols = {"job_id": job_id, **sets}
    for key in ("server_id", "vcenter_host_id"):
        if task.get(key):
            cols[key] = str(task[key])
    names = ", ".join(cols)
    conn.execute(
        f"INSERT INTO public.job_tasks ({names}) VALUES ({', '.join(f'%({c})s' for c in cols)})",
        cols,
    )


def handle(backend: Backend, headers: dict[str, str], body: bytes) -> Response:
    gateway_claims(backend, headers)
    payload = parse_json(body)
    require_signature(backend, headers, payload)
    if not isinstance(payload, dict):
        raise Reply(400, {"success": False, "error": "Invalid request body"})
    job = payload.get("job")
    job_id = _job_id(job)
    tasks = payload.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise Reply(400, {"success": False, "error": "tasks must be a list of objects"})
    details = job.get("details")
    params = {
        "id": job_id,
        "status": job.get("status"),
        "details": None if details is None else json.dumps(details),
        "started_at": job.get("started_at"),
        "completed_at": job.get("completed_at"),
    }
    with service_connection(backend) as conn:
        try:
            with conn.transaction():
                row = conn.execute(_UPDATE_JOB, params).fetchone()
                if row is None:
                    current = conn.execute(
                        "SELECT status::text FROM public.jobs WHERE id = %s", [job_id]
                    ).fetchone()
                    if current is None:
                        raise Reply(404, {"success": False, "error": f"Job {job_id} not found"})
                    raise Reply(
                        409,
                        {
                            "success": False,
                            "error": f"Job {job_id} is {current[0]}; a finished job is not changed",
                        },
                    )
                for task in tasks:
                    _write_task(conn, job_id, task)
        except psycopg.Error as exc:
            raise Reply(400, {"success": False, "error": exc.diag.message_primary or str(exc)}) from None
    return reply(200, {"success": True, "job": {"id": row[0], "status": row[1]}, "tasks": len(tasks)})
