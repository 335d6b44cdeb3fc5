"""Token login, authentication errors, /healthz and JSON error pages."""
from __future__ import annotations

from unittest import mock

import pytest
from django.db.utils import OperationalError
from rest_framework.test import APIClient


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/auth/token/", "/api/auth/token"])
def test_token_login_then_token_authenticates_api_calls(user, path):
    client = APIClient()
    response = client.post(path, {"username": "builder", "password": "pw-builder-123"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiry"}
    assert body["expiry"] is None
    client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert client.get("/api/workflows/").status_code == 200


@pytest.mark.django_db
def test_token_is_stored_hashed(user):
    from knox.models import AuthToken

    token = APIClient().post(
        "/api/auth/token/", {"username": "builder", "password": "pw-builder-123"}, format="json"
    ).json()["token"]
    stored = AuthToken.objects.get(user=user)
    assert token not in (stored.digest, stored.token_key)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"username": "builder", "password": "wrong"},
        {"username": "nobody", "password": "pw-builder-123"},
    ],
)
def test_wrong_credentials_answer_400_with_a_message(user, body):
    response = APIClient().post("/api/auth/token/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"
    assert "username and password" in response.json()["message"]


@pytest.mark.django_db
def test_missing_credentials_name_the_fields(user):
    response = APIClient().post("/api/auth/token/", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["extra"]["errors"]) == {"username", "password"}


@pytest.mark.django_db
def test_login_ignores_a_stale_authorization_header(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.post("/api/auth/token/", {"username": "builder", "password": "pw-builder-123"}, format="json")
    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/workflows/", "/api/prompts", "/api/executions/"])
def test_unauthenticated_requests_get_401_json(path):
    response = APIClient().get(path)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert "Token" in response["WWW-Authenticate"]


@pytest.mark.django_db
def test_invalid_token_gets_401_json():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token abcdef")
    response = client.get("/api/workflows/")
    assert response.status_code == 401
    assert response.json()["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_healthz_reports_database_ok(path):
    response = APIClient().get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db
def test_healthz_answers_503_when_the_database_fails():
    with mock.patch("promptpilot.common.readiness.connection.cursor", side_effect=OperationalError("down")):
        response = APIClient().get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert response.json()["database"].startswith("error")


@pytest.mark.django_db
def test_unknown_api_path_answers_json_404(api):
    response = api.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_unsupported_method_answers_json_405(api):
    response = api.delete("/api/executions/")
    assert response.status_code == 405
    assert response.json()["message"]
