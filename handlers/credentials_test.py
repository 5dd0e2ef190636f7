"""test_credentials: log in to each target iDRAC, read the service root and the system, log out.

Targets: the job's servers (each with its resolved credentials), or one address given in the job
(details.ip_address, with details.credential_set_id or the job's credential_set_ids). Writes
servers.credential_test_status (valid | invalid), credential_last_tested, connection_status
(online | offline) and connection_error. The message tells a wrong password from an unreachable
BMC from a TLS problem. An unreachable or untrusted BMC leaves credential_test_status as it was:
nothing was learnt about the credentials.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from handlers.base import Handler, InvalidJobInput, Job, JobContext, Server, TaskHandle
from handlers.common import run_on_targets
from lib.errors import AgentError, AuthError, ConnectivityError, RemoteError, TLSError
from lib.redfish import client_for, split_address


def classify(exc: AgentError) -> tuple[str, dict[str, Any]]:
    """(verdict, servers columns) for a failed test. Verdicts: invalid, tls, unreachable, error."""
    if isinstance(exc, AuthError):
        return "invalid", {
            "credential_test_status": "invalid",
            "connection_status": "online",
            "connection_error": f"Wrong user name or password: {exc.message}",
        }
    if isinstance(exc, TLSError):
        return "tls", {"connection_status": "offline", "connection_error": f"TLS: {exc.message}"}
    if isinstance(exc, ConnectivityError):
        return "unreachable", {
            "connection_status": "offline",
            "connection_error": f"Unreachable: {exc.message}",
        }
    return "error", {"connection_status": "online", "connection_error": f"iDRAC error: {exc.message}"}


class TestCredentialsHandler(Handler):
    job_types = ("test_credentials",)
    uses_idrac = True

    def validate(self, job: Job) -> dict[str, Any]:
        d = job.details
        address = d.get("ip_address") or d.get("address") or d.get("ip") or d.get("target_ip")
        cred_set = d.get("credential_set_id") or (
            job.credential_set_ids[0] if job.credential_set_ids else None
        )
        if address is not None:
            address = str(address).strip()
            if not address or not split_address(address)[1]:
                raise InvalidJobInput("details.ip_address", f"{address!r} is not an address")
        return {"address": address, "credential_set_id": cred_set}

    def execute(self, ctx: JobContext, params: dict[str, Any]) -> None:
        if params["address"]:
            with ctx.step(f"test credentials on {params['address']}", retry_safe=True):
                result = self.one_address(ctx, params)
            ctx.set_result(servers=[result])
            if not result["ok"]:
                raise AgentError(f"{params['address']}: {result['error']}", hint=result["hint"])
            return
        run_on_targets(ctx, "test credentials", lambda s, t: self.one(ctx, s, t), retry_safe=True)

    def _probe(self, ctx: JobContext, server: Server) -> dict[str, Any]:
        creds = ctx.credentials_for(server)
        with client_for(ctx, server, creds) as bmc:
            root = bmc.root()
            system = bmc.system()
            auth = "basic" if bmc.auth.basic else "session"
        return {
            "username": creds.username,
            "credential_source": creds.source,
            "auth": auth,
            "redfish_version": root.get("RedfishVersion"),
            "model": system.get("Model"),
            "power_state": system.get("PowerState"),
        }

    def one(self, ctx: JobContext, server: Server, task: TaskHandle) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).isoformat()
        try:
            info = self._probe(ctx, server)
        except AgentError as exc:
            verdict, cols = classify(exc)
            ctx.store.update_server(server.id, credential_last_tested=now, **cols)
            task.log(cols["connection_error"], "ERROR")
            kind = {"invalid": AuthError, "tls": TLSError, "unreachable": ConnectivityError}.get(
                verdict, RemoteError
            )
            raise kind(cols["connection_error"], hint=exc.hint) from exc
        ctx.store.update_server(
            server.id,
            credential_test_status="valid",
            credential_last_tested=now,
            connection_status="online",
            connection_error=None,
        )
        task.log(f"credentials valid: logged in as {info['username']} ({info['auth']} auth)")
        return {"server_id": server.id, "server": server.label, "verdict": "valid", **info}

    def one_address(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        address = params["address"]
        rows = ctx.store.select("servers", {"ip_address": f"eq.{address}", "select": "id"})
        server_id = str(rows[0]["id"]) if rows else ""
        probe = Server(id=server_id, ip_address=address, credential_set_id=params["credential_set_id"])
        now = dt.datetime.now(dt.UTC).isoformat()
        try:
            info = self._probe(ctx, probe)
        except AgentError as exc:
            verdict, cols = classify(exc)
            if server_id:
                ctx.store.update_server(server_id, credential_last_tested=now, **cols)
            ctx.log(cols["connection_error"], "ERROR")
            return {
                "address": address,
                "ok": False,
                "verdict": verdict,
                "error": cols["connection_error"],
                "hint": exc.hint,
            }
        if server_id:
            ctx.store.update_server(
                server_id,
                credential_test_status="valid",
                credential_last_tested=now,
                connection_status="online",
                connection_error=None,
            )
        ctx.log(f"{address}: credentials valid ({info['auth']} auth)")
        return {"address": address, "ok": True, "verdict": "valid", **info}
