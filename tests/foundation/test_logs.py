"""Secrets never reach the log, not even inside the text of a logged exception."""

import io
import json
import logging

import pytest

from lib.logs import register_secret, setup_logging

PASSWORD = "Hunter2-Very-Secret"


@pytest.fixture
def captured():
    stream = io.StringIO()
    setup_logging(level="DEBUG", fmt="text", stream=stream)
    yield stream
    setup_logging(level="WARNING", fmt="text")


def _failed_login() -> None:
    # What a careless library does: puts the credential into the exception text.
    raise RuntimeError(
        f"login failed for admin with password {PASSWORD} at https://admin:{PASSWORD}@ome.local"
    )


def test_password_never_in_log_output_or_exception_text(captured):
    register_secret(PASSWORD)
    log = logging.getLogger("test.redaction")
    log.info("connecting with %s", PASSWORD)
    try:
        _failed_login()
    except RuntimeError:
        log.exception("OME login failed")
    out = captured.getvalue()
    assert "OME login failed" in out
    assert "RuntimeError" in out  # the exception is still there for the operator...
    assert PASSWORD not in out  # ...without the secret
    assert out.count("***") >= 3


def test_auth_headers_are_scrubbed_even_when_not_registered(captured):
    log = logging.getLogger("test.redaction")
    log.warning("sent headers {'X-Auth-Token': 'tok-abcdef123', 'Authorization': 'Bearer eyJhbGciOi.x.y'}")
    log.warning("apikey=eyJanon.key.value X-API-Token: plain-token-77")
    out = captured.getvalue()
    for secret in ("tok-abcdef123", "eyJhbGciOi.x.y", "eyJanon.key.value", "plain-token-77"):
        assert secret not in out


def test_json_lines_are_redacted_and_parseable():
    stream = io.StringIO()
    setup_logging(level="INFO", fmt="json", stream=stream)
    try:
        register_secret(PASSWORD)
        logging.getLogger("test.json").info(
            "password is %s", PASSWORD, extra={"job_id": "j-1", "target": f"admin:{PASSWORD}"}
        )
        record = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert record["message"] == "password is ***"
        assert record["job_id"] == "j-1"
        assert record["target"] == "admin:***"  # structured extras are redacted too
        assert record["level"] == "INFO"
        assert record["ts"].endswith("Z")
    finally:
        setup_logging(level="WARNING", fmt="text")
