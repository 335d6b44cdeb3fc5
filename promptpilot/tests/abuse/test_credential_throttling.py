"""Guessing credentials is throttled: wrong passwords at /api/auth/token/ and wrong
X-API-Key values are counted per account (or trigger) and per client address, and past
the limit every try answers 429 with Retry-After, a right one included."""
from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PER_TARGET, _ = settings.PROMPTPILOT["AUTH_FAILURE_RATE_PER_TARGET"].split("/")
PER_CLIENT, _ = settings.PROMPTPILOT["AUTH_FAILURE_RATE_PER_CLIENT"].split("/")


def _client(address: str = "203.0.113.7") -> APIClient:
    return APIClient(REMOTE_ADDR=address)


def _login(client, username: str, password: str):
    return client.post("/api/auth/token/", {"username": username, "password": password}, format="json")


def _is_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) >= 1
    assert "Retry-After" in response.json()["message"]


def test_wrong_passwords_for_one_account_are_throttled(user):
    attacker = _client()
    for _ in range(int(PER_TARGET)):
        assert _login(attacker, "builder", "wrong").status_code == 400
    _is_throttled(_login(attacker, "builder", "wrong"))
    # While throttled even the right password is refused: otherwise guessing goes on.
    _is_throttled(_login(_client("198.51.100.9"), "builder", "pw-builder-123"))


def test_an_account_throttle_leaves_other_accounts_alone(user, other_user):
    attacker = _client()
    for _ in range(int(PER_TARGET)):
        _login(attacker, "builder", "wrong")
    assert _login(_client("198.51.100.9"), "intruder", "pw-intruder-123").status_code == 200


def test_wrong_passwords_from_one_address_are_throttled_across_accounts(user):
    attacker = _client()
    for n in range(int(PER_CLIENT)):
        assert _login(attacker, f"nobody{n}", "wrong").status_code == 400
    _is_throttled(_login(attacker, "builder", "pw-builder-123"))
    assert _login(_client("198.51.100.9"), "builder", "pw-builder-123").status_code == 200


def test_successful_logins_are_not_counted(user):
    client = _client()
    for _ in range(int(PER_TARGET) + 2):
        assert _login(client, "builder", "pw-builder-123").status_code == 200


def _execute(client, trigger, key):
    return client.post(f"/api/triggers/{trigger.pk}/execute", {"input": {"customer": "Ada"}}, format="json",
                       HTTP_X_API_KEY=key)


def test_wrong_api_keys_for_one_trigger_are_throttled(api_trigger):
    trigger, key = api_trigger
    for n in range(int(PER_TARGET)):
        assert _execute(_client(f"192.0.2.{n + 1}"), trigger, f"pp_wrong{n}").status_code == 401
    _is_throttled(_execute(_client("192.0.2.200"), trigger, "pp_wrong-again"))


def test_wrong_api_keys_from_one_address_are_throttled(api_trigger, workflow):
    from triggers.tests.helpers import create_trigger

    trigger, key = api_trigger
    others = [create_trigger(workflow, "API", name=f"other {n}")[0] for n in range(3)]
    attacker = _client()
    for n in range(int(PER_CLIENT)):
        assert _execute(attacker, others[n % 3], "pp_wrong").status_code == 401
    _is_throttled(_execute(attacker, trigger, key))
    assert _execute(_client("198.51.100.9"), trigger, key).status_code == 202
