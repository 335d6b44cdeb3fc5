"""A lone UTF-16 surrogate ("\\ud800") is valid JSON syntax but no valid text: it cannot
be stored or sent back as UTF-8. It is bad input (400 saying what to change), never a
500, and a signed webhook carrying one is still recorded (DESIGN §5)."""
from __future__ import annotations

from functools import partial

import pytest
from django import forms

from triggers import forms as trigger_forms
from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import deliver, signed_headers
from workflows import forms as workflow_forms
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db

LONE = b'{"input": {"customer": "Ada \\ud800"}}'


def _post_raw(client, path, body: bytes, **extra):
    return client.post(path, data=body, content_type="application/json", **extra)


def _says_what_to_change(response) -> None:
    assert response.status_code == 400, response.content
    message = response.json()["message"]
    assert "surrogate" in message and "\\ud800" in message, message


def test_preview_refuses_a_lone_surrogate(api, workflow):
    _says_what_to_change(_post_raw(api, f"/api/workflows/{workflow.pk}/preview", LONE))


def test_execute_refuses_a_lone_surrogate(api, workflow):
    _says_what_to_change(_post_raw(api, f"/api/workflows/{workflow.pk}/execute", LONE))
    assert WorkflowExecution.objects.count() == 0


def test_api_key_trigger_refuses_a_lone_surrogate(anon, api_trigger):
    trigger, key = api_trigger
    _says_what_to_change(_post_raw(anon, f"/api/triggers/{trigger.pk}/execute", LONE, HTTP_X_API_KEY=key))


def test_a_surrogate_pair_is_fine(api, workflow):
    pair = b'{"input": {"customer": "Ada \\ud83d\\ude00"}}'
    response = _post_raw(api, f"/api/workflows/{workflow.pk}/execute", pair)
    assert response.status_code == 202, response.content
    assert WorkflowExecution.objects.get().input["customer"] == "Ada \U0001F600"


def test_signed_webhook_with_a_lone_surrogate_is_recorded_and_refused(anon, webhook):
    trigger, secret = webhook
    body = b'{"customer": "Ada \\udfff", "note": "kept"}'
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 400, response.content
    assert "surrogate" in response.json()["message"]
    invocation = TriggerInvocation.objects.get()
    assert invocation.verified and invocation.status == InvocationStatus.REJECTED
    assert "surrogate" in invocation.error
    # The body is kept, the invalid code point replaced, so the owner sees what came.
    assert invocation.payload == {"customer": "Ada \ufffd", "note": "kept"}
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.parametrize("parse", [
    partial(workflow_forms.parse_json, label="Input"),
    partial(trigger_forms.parse_json_object, label="Config"),
], ids=["workflow pages", "trigger pages"])
def test_page_forms_refuse_a_lone_surrogate_in_json_text(parse):
    with pytest.raises(forms.ValidationError) as caught:
        parse('{"customer": "Ada \\ud800"}')
    assert "surrogate" in str(caught.value)
    assert parse('{"customer": "Ada \\ud83d\\ude00"}') == {"customer": "Ada \U0001F600"}
