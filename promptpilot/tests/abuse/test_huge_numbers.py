"""A NUMBER too large for a float (a 400-digit integer) is bad input, not a server error,
wherever a number enters: execute, preview, API-key triggers, signed webhooks, defaults."""
from __future__ import annotations

import json

import pytest

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import deliver, signed_headers
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db

HUGE = 10**400


def _names_amount(response) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert "amount" in json.dumps(body["extra"]), body
    assert "amount" in body["extra"]["errors"], body


def test_execute_refuses_a_number_too_large_for_a_float(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/execute",
                        {"input": {"customer": "Ada", "amount": HUGE}}, format="json")
    _names_amount(response)
    assert WorkflowExecution.objects.count() == 0


def test_preview_refuses_a_number_too_large_for_a_float(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/preview",
                        {"input": {"customer": "Ada", "amount": HUGE}}, format="json")
    _names_amount(response)


def test_api_key_trigger_refuses_a_number_too_large_for_a_float(anon, api_trigger):
    trigger, key = api_trigger
    response = anon.post(f"/api/triggers/{trigger.pk}/execute", {"input": {"customer": "Ada", "amount": HUGE}},
                         format="json", HTTP_X_API_KEY=key)
    _names_amount(response)
    assert TriggerInvocation.objects.get().status == InvocationStatus.INVALID_INPUT


def test_signed_webhook_with_a_huge_number_is_recorded_and_refused(anon, webhook):
    trigger, secret = webhook
    body = json.dumps({"customer": "Ada", "amount": HUGE}).encode()
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 422, response.content
    assert "amount" in response.json()["extra"]["errors"]
    invocation = TriggerInvocation.objects.get()
    assert invocation.verified and invocation.status == InvocationStatus.INVALID_INPUT
    assert "amount" in invocation.error
    assert WorkflowExecution.objects.count() == 0


def test_saving_a_variable_default_too_large_for_a_float_names_the_variable(api):
    body = {
        "name": "Huge default",
        "variables": [{"name": "amount", "type": "NUMBER", "required": False, "default": HUGE}],
        "steps": [{"name": "show", "order": 1, "type": "TRANSFORM", "config": {"template": "{{ input.amount }}"}}],
    }
    response = api.post("/api/workflows/", body, format="json")
    assert response.status_code == 400, response.content
    # Definition errors name the field by its path in the body, as every save error does.
    assert "variables[0].default" in json.dumps(response.json()["extra"]), response.json()
    assert "1.8e+308" in response.json()["message"]


def test_a_large_number_a_float_can_hold_is_still_accepted(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/execute",
                        {"input": {"customer": "Ada", "amount": 10**300}}, format="json")
    assert response.status_code == 202, response.content
