"""IDRAC_* and POWER_* settings: read once from the program's Env (--env-file included), validated,
and handed to handlers and lib.redfish.client_for through ctx.settings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lib.config import Env
from lib.errors import ConfigError
from lib.executor import app
from lib.redfish import client_for
from tests.executor.helpers import Executor

BASE = {"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "svc-key"}


def _env(tmp_path: Path, text: str) -> Env:
    f = tmp_path / "exec.env"
    f.write_text(text)
    return Env(env_file=f, environ=BASE)


def test_env_file_values_reach_the_handlers_and_the_redfish_client(tmp_path: Path):
    env = _env(
        tmp_path,
        "POWER_ACTION_TIMEOUT=42\nPOWER_POLL_SECONDS=0.5\nIDRAC_TIMEOUT=7\nIDRAC_BUSY_RETRY_SECONDS=3\n"
        "IDRAC_USER=file-user\n",
    )
    built = app.build(env)
    cfg = built.daemon.services.settings
    assert (cfg.power_action_timeout, cfg.power_poll_seconds) == (42, 0.5)
    assert built.daemon.services.resolver.default_user == "file-user"
    ctx = SimpleNamespace(settings=cfg, sleep=lambda s: None, audit=lambda **kw: None)
    server = SimpleNamespace(ip_address="127.0.0.1:1", id=None, requires_legacy_ssl=False)
    client = client_for(ctx, server, SimpleNamespace(username="u", password="p"))
    try:
        assert client.busy_retry.max_seconds == 3
        assert client.http.timeout[1] == 7
    finally:
        client.http.close()


@pytest.mark.parametrize(
    "line, name",
    [
        ("POWER_ACTION_TIMEOUT=soon", "POWER_ACTION_TIMEOUT"),
        ("IDRAC_BUSY_RETRY_SECONDS=-1", "IDRAC_BUSY_RETRY_SECONDS"),
    ],
)
def test_bad_handler_settings_in_the_env_file_are_a_config_error(tmp_path: Path, line: str, name: str):
    with pytest.raises(ConfigError) as err:
        app.build(_env(tmp_path, line + "\n"))
    assert name in str(err.value)


def test_power_validate_is_pure_and_defaults_come_from_ctx_settings(tmp_path: Path, monkeypatch):
    from handlers.power import PowerActionHandler
    from lib.executor.models import Job

    monkeypatch.setenv("POWER_ACTION_TIMEOUT", "not-a-number")  # validate must not read it
    params = PowerActionHandler().validate(
        Job.from_row({"id": "1", "job_type": "power_action", "details": {"action": "On"}})
    )
    assert params["timeout"] is None and params["poll"] is None


def test_check_with_a_bad_env_file_exits_2_naming_the_variable(clean_backend, tmp_path: Path):
    f = tmp_path / "bad.env"
    f.write_text("POWER_POLL_SECONDS=fast\n")
    ex = Executor(clean_backend, "env-file", tmp_path, "--check", "--env-file", str(f))
    assert ex.wait(timeout=120) == 2, ex.output
    assert "POWER_POLL_SECONDS" in ex.output
