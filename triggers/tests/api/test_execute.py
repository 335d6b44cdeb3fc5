"""POST /api/triggers/{id}/execute: MANUAL by the owner, API with X-API-Key, throttled per trigger."""
from __future__ import annotations

import pytest
from knox.models import AuthToken

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import create_trigger
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db

BODY = {"input": {"customer": "Ada"}, "source": "crm"}


def execute(client, trigger, body=BODY, **headers):
    return client.post(f"/api/triggers/{trigger.pk}/execute", body, format="json", **headers)


def test_owner_executes_a_manual_trigger(api, user, manual):
    response = execute(api, manual)
    assert response.status_code == 202, response.json()
    data = response.json()
    assert set(data) >= {"execution_id", "invocation_id", "execution"}
    assert data["execution"]["id"] == data["execution_id"] and data["execution"]["status"] == "PENDING"
    execution = WorkflowExecution.objects.get(pk=data["execution_id"])
    assert execution.trigger_type == "MANUAL" and execution.trigger_id == manual.pk
    assert execution.started_by == user
    assert execution.metadata["payload"] == BODY, "trigger.payload is the whole request body"
    invocation = TriggerInvocation.objects.get(pk=data["invocation_id"])
    assert invocation.verified and invocation.request_meta["auth"] == "owner"


def test_manual_invalid_input_answers_400_and_is_recorded(api, manual):
    response = execute(api, manual, {"input": {"customer": 5, "typo": 1}})
    assert response.status_code == 400
    assert set(response.json()["extra"]["errors"]) == {"customer", "typo"}
    assert TriggerInvocation.objects.get().status == InvocationStatus.INVALID_INPUT
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.parametrize("body", [[1, 2], {"input": [1]}, {"input": "x"}])
def test_malformed_body_answers_400(api, manual, body):
    assert execute(api, manual, body).status_code == 400
    assert WorkflowExecution.objects.count() == 0


def test_disabled_manual_trigger_answers_409_to_its_owner(api, manual):
    manual.is_active = False
    manual.save()
    response = execute(api, manual)
    assert response.status_code == 409 and response.json()["code"] == "trigger_inactive"


def test_webhook_trigger_is_not_executed_here(api, webhook):
    response = execute(api, webhook[0])
    assert response.status_code == 400
    assert "/api/webhooks/" in response.json()["message"]


def test_another_user_cannot_execute(other_api, manual):
    assert execute(other_api, manual).status_code == 404
    assert WorkflowExecution.objects.count() == 0


def test_no_credentials_answers_401_json_naming_both_ways(anon, manual):
    response = execute(anon, manual)
    assert response.status_code == 401
    assert "X-API-Key" in response.json()["message"] and "Token" in response.json()["message"]
    assert response["WWW-Authenticate"].startswith("ApiKey")


def test_idempotency_key_answers_the_first_run(api, manual):
    first = execute(api, manual, HTTP_IDEMPOTENCY_KEY="k-1")
    again = execute(api, manual, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert WorkflowExecution.objects.count() == 1


# --- API keys ------------------------------------------------------------------------

def test_api_key_executes_without_a_user(anon, api_trigger):
    trigger, key = api_trigger
    response = execute(anon, trigger, HTTP_X_API_KEY=key)
    assert response.status_code == 202, response.json()
    execution = WorkflowExecution.objects.get(pk=response.json()["execution_id"])
    assert execution.trigger_type == "API" and execution.started_by is None
    assert TriggerInvocation.objects.get().request_meta["auth"] == "api_key"


@pytest.mark.parametrize("key", ["pp_wrong", "", "x" * 500])
def test_wrong_key_answers_401(anon, api_trigger, key):
    trigger, _ = api_trigger
    response = execute(anon, trigger, HTTP_X_API_KEY=key)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"
    assert response["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'
    assert WorkflowExecution.objects.count() == 0


def test_key_of_another_trigger_answers_401(anon, api_trigger, workflow):
    trigger, _ = api_trigger
    _, other_key = create_trigger(workflow, "API")
    assert execute(anon, trigger, HTTP_X_API_KEY=other_key).status_code == 401


def test_key_wins_over_a_user_token_and_is_checked(anon, user, api_trigger, manual):
    token = AuthToken.objects.create(user)[1]
    trigger, _ = api_trigger
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    assert execute(anon, trigger, HTTP_X_API_KEY="pp_wrong", **auth).status_code == 401
    assert execute(anon, manual, **auth).status_code == 202, "the owner's real token works"


def test_owner_may_execute_an_api_trigger_with_a_token(api, api_trigger):
    assert execute(api, api_trigger[0]).status_code == 202


def test_inactive_or_unknown_api_trigger_answers_404(anon, api_trigger, manual):
    trigger, key = api_trigger
    assert execute(anon, manual, HTTP_X_API_KEY=key).status_code == 404, "a MANUAL trigger takes no key"
    response = anon.post("/api/triggers/00000000-0000-0000-0000-000000000000/execute", BODY, format="json",
                         HTTP_X_API_KEY=key)
    assert response.status_code == 404
    trigger.is_active = False
    trigger.save()
    assert execute(anon, trigger, HTTP_X_API_KEY=key).status_code == 404


def test_rotated_key_old_value_is_rejected(api, anon, api_trigger):
    trigger, old = api_trigger
    body = api.post(f"/api/triggers/{trigger.pk}/rotate-secret").json()
    new = body["secret"]
    assert new.startswith("pp_") and new != old and body["api_key_prefix"] == new[:11]
    assert execute(anon, trigger, HTTP_X_API_KEY=old).status_code == 401
    assert execute(anon, trigger, HTTP_X_API_KEY=new).status_code == 202


def test_api_invalid_input_answers_400_and_is_recorded(anon, api_trigger):
    trigger, key = api_trigger
    response = execute(anon, trigger, {"input": {}}, HTTP_X_API_KEY=key)
    assert response.status_code == 400 and "customer" in response.json()["extra"]["errors"]
    assert TriggerInvocation.objects.get().status == InvocationStatus.INVALID_INPUT


# --- throttling ----------------------------------------------------------------------

def test_api_trigger_is_throttled_per_trigger_with_retry_after(anon, workflow):
    trigger, key = create_trigger(workflow, "API", config={"rate_limit": "3/min"})
    other, other_key = create_trigger(workflow, "API", config={"rate_limit": "3/min"})
    codes = [execute(anon, trigger, HTTP_X_API_KEY=key).status_code for _ in range(3)]
    assert codes == [202, 202, 202]
    limited = execute(anon, trigger, HTTP_X_API_KEY=key)
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert "3/min" in limited.json()["message"] and limited.json()["code"] == "throttled"
    assert WorkflowExecution.objects.count() == 3
    assert execute(anon, other, HTTP_X_API_KEY=other_key).status_code == 202, "each trigger has its own window"


def test_default_rate_applies_without_config(anon, api_trigger, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "TRIGGER_DEFAULT_RATE": "2/min"}
    trigger, key = api_trigger
    codes = [execute(anon, trigger, HTTP_X_API_KEY=key).status_code for _ in range(3)]
    assert codes == [202, 202, 429]


def test_throttle_window_passes(anon, workflow, monkeypatch):
    from triggers.throttling import TriggerRateThrottle

    clock = [1000.0]
    monkeypatch.setattr(TriggerRateThrottle, "timer", lambda self: clock[0])
    trigger, key = create_trigger(workflow, "API", config={"rate_limit": "1/s"})
    assert execute(anon, trigger, HTTP_X_API_KEY=key).status_code == 202
    assert execute(anon, trigger, HTTP_X_API_KEY=key).status_code == 429
    clock[0] += 1.01
    assert execute(anon, trigger, HTTP_X_API_KEY=key).status_code == 202


def test_manual_triggers_are_not_throttled(api, manual, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "TRIGGER_DEFAULT_RATE": "1/min"}
    assert [execute(api, manual).status_code for _ in range(3)] == [202, 202, 202]


def test_api_key_rotation_takes_no_grace_period(api, api_trigger):
    trigger, _ = api_trigger
    response = api.post(f"/api/triggers/{trigger.pk}/rotate-secret", {"grace_seconds": 60}, format="json")
    assert response.status_code == 400 and "revoked at once" in response.json()["message"]
