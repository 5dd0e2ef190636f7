"""The edge-function client: auth headers per CONTRACT.md, and HTTP answers as typed errors."""

import json

import pytest
import responses

from lib.config import DsmSettings
from lib.dsm.edge import EdgeClient
from lib.dsm.signing import verify
from lib.errors import AuthError, ConfigError, RemoteError
from lib.http import NO_RETRY, TLSConfig

URL = "https://dsm.test"
FN = f"{URL}/functions/v1/openmanage-sync"


def settings(**kw):
    base = dict(
        supabase_url=URL,
        anon_key="anon-key-1",
        service_role_key=None,
        api_token=None,
        jwt=None,
        email=None,
        password=None,
        edge_function_url=None,
        executor_secret=None,
        tls=TLSConfig(env_prefix="SUPABASE"),
    )
    base.update(kw)
    return DsmSettings(**base)


@responses.activate
def test_api_token_headers():
    responses.post(FN, json={"success": True})
    EdgeClient(settings(api_token="tok-1"), retry=NO_RETRY).call("openmanage-sync", {"devices": [{"a": 1}]})
    sent = responses.calls[0].request
    assert sent.headers["X-API-Token"] == "tok-1"
    assert sent.headers["apikey"] == "anon-key-1"
    assert sent.headers["Authorization"] == "Bearer anon-key-1"
    assert json.loads(sent.body) == {"devices": [{"a": 1}]}


@responses.activate
def test_user_jwt_is_the_bearer():
    responses.post(FN, json={"success": True})
    EdgeClient(settings(jwt="user.jwt.value")).call("openmanage-sync", {"devices": []})
    assert responses.calls[0].request.headers["Authorization"] == "Bearer user.jwt.value"


@responses.activate
def test_hmac_signature_covers_the_bytes_sent():
    responses.post(f"{URL}/functions/v1/vcenter-sync", json={"success": True})
    body = {"hosts": [{"name": "esx-ü", "cpu": 2.0}]}
    EdgeClient(settings(executor_secret="s3cret")).call("vcenter-sync", body)
    sent = responses.calls[0].request
    received = json.loads(sent.body)
    assert verify(
        received, "s3cret", sent.headers["x-executor-signature"], sent.headers["x-executor-timestamp"]
    )


@responses.activate
def test_full_url_override_is_used_for_openmanage_sync():
    override = "https://other.test/functions/v1/openmanage-sync"
    responses.post(override, json={"success": True})
    s = settings(supabase_url=None, edge_function_url=override, api_token="t")
    EdgeClient(s).call("openmanage-sync", {"devices": [1]})
    assert responses.calls[0].request.url == override


@pytest.mark.parametrize(
    "status,error,needle",
    [
        (401, AuthError, "DSM_API_TOKEN"),
        (403, AuthError, "admin or operator"),
        (500, RemoteError, "HTTP 500"),
    ],
)
@responses.activate
def test_http_errors_become_typed_errors(status, error, needle):
    responses.post(FN, status=status, json={"success": False, "error": "boom"})
    with pytest.raises(error) as info:
        EdgeClient(settings(api_token="t"), retry=NO_RETRY).call("openmanage-sync", {"devices": [1]})
    assert needle in info.value.message + " " + info.value.hint


def test_no_credential_is_a_config_error():
    with pytest.raises(ConfigError):
        EdgeClient(settings())
