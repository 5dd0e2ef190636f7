"""Settings precedence (flags > environment > .env), booleans, and missing values."""

import pytest

from lib.config import VARIABLES, Env, dsm_settings, ome_settings
from lib.errors import ConfigError
from lib.logs import redact


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("OME_HOST=from-file\nOME_PORT=8443\nOME_USERNAME=file-user\nOME_PASSWORD=file-pass-123\n")
    return path


def test_flags_beat_environment_beat_env_file(env_file):
    env = Env(
        {"OME_HOST": "from-flag"}, env_file=env_file, environ={"OME_HOST": "from-env", "OME_PORT": "9443"}
    )
    settings = ome_settings(env)
    env.check()
    assert settings.host == "from-flag"
    assert settings.port == 9443  # environment over .env
    assert settings.username == "file-user"  # .env fills what nothing else set
    assert settings.password == "file-pass-123"


def test_env_file_never_overrides_a_set_variable(env_file):
    env = Env(env_file=env_file, environ={"OME_USERNAME": "env-user"})
    assert env.str("OME_USERNAME") == "env-user"


def test_alias_names_of_existing_deployments_work(tmp_path):
    env = Env(
        env_file=tmp_path / "none", environ={"SERVICE_ROLE_KEY": "srk-123", "DSM_URL": "http://127.0.0.1:1"}
    )
    env.problems.clear()  # the missing --env-file is not the point here
    settings = dsm_settings(env, need_service_role=True)
    env.check()
    assert settings.service_role_key == "srk-123"
    assert settings.supabase_url == "http://127.0.0.1:1"


@pytest.mark.parametrize(
    "text,expected", [("TRUE", True), ("yes", True), ("1", True), ("No", False), ("0", False)]
)
def test_booleans_accept_common_words(text, expected):
    assert Env(environ={"OME_VERIFY_SSL": text}, env_file="/dev/null").bool("OME_VERIFY_SSL") is expected


def test_bad_boolean_names_the_variable_and_value():
    env = Env(environ={"OME_VERIFY_SSL": "maybe"}, env_file="/dev/null")
    env.bool("OME_VERIFY_SSL")
    with pytest.raises(ConfigError) as info:
        env.check()
    assert "OME_VERIFY_SSL" in str(info.value)
    assert "'maybe'" in str(info.value)


def test_missing_password_without_terminal_is_a_config_error_naming_it():
    env = Env(environ={"OME_HOST": "ome", "OME_USERNAME": "admin"}, env_file="/dev/null", interactive=False)
    ome_settings(env)
    with pytest.raises(ConfigError) as info:
        env.check()
    assert "OME_PASSWORD" in str(info.value)


def test_every_problem_is_reported_at_once():
    env = Env(environ={"OME_PORT": "http", "OME_PAGE_SIZE": "5000"}, env_file="/dev/null", interactive=False)
    ome_settings(env)
    with pytest.raises(ConfigError) as info:
        env.check()
    text = str(info.value)
    for name in ("OME_HOST", "OME_USERNAME", "OME_PASSWORD", "OME_PORT", "OME_PAGE_SIZE"):
        assert name in text


def test_secrets_read_through_env_are_redacted():
    env = Env(environ={"OME_PASSWORD": "Zebra-Secret-991"}, env_file="/dev/null")
    env.str("OME_PASSWORD")
    assert "Zebra-Secret-991" not in redact("login failed for password Zebra-Secret-991")


def test_every_variable_is_documented_in_readme():
    from lib.config import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in readme]
    assert not missing, f"README.md's variable table lacks {missing}"


def test_missing_env_file_is_named_and_dev_null_is_accepted(tmp_path):
    env = Env(env_file=tmp_path / "nope.env", environ={})
    with pytest.raises(ConfigError) as info:
        env.check()
    assert "nope.env" in str(info.value)
    Env(env_file="/dev/null", environ={}).check()  # no problem


def test_bad_log_level_is_a_configuration_error_not_a_crash(monkeypatch, capsys):
    from lib.cli import base_parser, run

    monkeypatch.setenv("LOG_LEVEL", "verbose")
    with pytest.raises(SystemExit) as info:
        run(
            base_parser("prog", "test"), lambda args: 0, ["--env-file", "/dev/null"], sigterm_interrupts=False
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "LOG_LEVEL" in err and "VERBOSE" in err
