"""Supabase Auth subset: password and refresh grants as supabase-py uses them."""

from __future__ import annotations

import uuid

import jwt
import pytest
import requests

from lab.backend.launcher import BackendProcess
from supabase import create_client


def test_sign_in_with_supabase_py(backend: BackendProcess) -> None:
    email = f"u{uuid.uuid4().hex[:8]}@lab.test"
    uid = backend.create_user(email, "Secret-pw1", "operator")
    client = create_client(backend.url, backend.anon_key)
    res = client.auth.sign_in_with_password({"email": email, "password": "Secret-pw1"})
    assert res.user is not None and res.user.id == uid and res.user.email == email
    assert res.session is not None
    claims = jwt.decode(
        res.session.access_token, backend.jwt_secret, algorithms=["HS256"], audience="authenticated"
    )
    assert claims["sub"] == uid and claims["role"] == "authenticated"
    refreshed = client.auth.refresh_session(res.session.refresh_token)
    assert refreshed.session is not None and refreshed.session.refresh_token != res.session.refresh_token


def test_wrong_password_is_400_invalid_credentials(backend: BackendProcess) -> None:
    from supabase_auth.errors import AuthApiError

    email = f"u{uuid.uuid4().hex[:8]}@lab.test"
    backend.create_user(email, "right-pw", "admin")
    client = create_client(backend.url, backend.anon_key)
    with pytest.raises(AuthApiError) as info:
        client.auth.sign_in_with_password({"email": email, "password": "wrong-pw"})
    assert info.value.status == 400
    assert "Invalid login credentials" in info.value.message
    r = requests.post(
        f"{backend.url}/auth/v1/token?grant_type=password",
        json={"email": email, "password": "wrong-pw"},
        headers={"apikey": backend.anon_key, "X-Supabase-Api-Version": "2024-01-01"},
    )
    assert r.status_code == 400
    assert r.json() == {"code": "invalid_credentials", "message": "Invalid login credentials"}


def test_refresh_token_is_single_use(backend: BackendProcess) -> None:
    email = f"u{uuid.uuid4().hex[:8]}@lab.test"
    backend.create_user(email, "pw-abcdef", "admin")
    url = f"{backend.url}/auth/v1/token"
    h = {"apikey": backend.anon_key}
    s = requests.post(
        url + "?grant_type=password", json={"email": email, "password": "pw-abcdef"}, headers=h
    ).json()
    r1 = requests.post(
        url + "?grant_type=refresh_token", json={"refresh_token": s["refresh_token"]}, headers=h
    )
    assert r1.status_code == 200 and r1.json()["access_token"]
    r2 = requests.post(
        url + "?grant_type=refresh_token", json={"refresh_token": s["refresh_token"]}, headers=h
    )
    assert r2.status_code == 400


def test_auth_requires_apikey(backend: BackendProcess) -> None:
    r = requests.post(
        f"{backend.url}/auth/v1/token?grant_type=password", json={"email": "a@b", "password": "x"}
    )
    assert r.status_code == 401
