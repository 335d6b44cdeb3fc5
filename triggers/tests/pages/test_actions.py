"""Buttons of the trigger page: enable/disable, rotate, execute, delete. Each calls the
same service as the API and reports with a flash message."""
from __future__ import annotations

import time

import pytest

from triggers.models import InvocationStatus, TriggerInvocation, WorkflowTrigger
from triggers.services.api_keys import api_key_matches
from triggers.services.webhooks import (
    WebhookVerificationError,
    webhook_signature,
    webhook_trigger_secrets,
    webhook_verify,
)
from triggers.tests.helpers import create_trigger
from workflows.models import WorkflowExecution

from .helpers import flashes, one_time_secret, text

pytestmark = pytest.mark.django_db


def _signed(secret: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {"webhook-id": "msg_1", "webhook-timestamp": timestamp,
            "webhook-signature": webhook_signature(secret=secret, msg_id="msg_1", timestamp=timestamp, body=body)}


# --- enable / disable ----------------------------------------------------------------

def test_disable_then_enable(page, manual):
    response = page.post(f"/triggers/{manual.pk}/toggle", {"is_active": "0"}, follow=True)
    manual.refresh_from_db()
    assert not manual.is_active
    assert response.redirect_chain == [(f"/triggers/{manual.pk}/", 302)]
    assert any("disabled" in message for message in flashes(response))
    assert 'data-testid="active-badge">Disabled<' in text(response) and ">Enable</button>" in text(response)

    response = page.post(f"/triggers/{manual.pk}/toggle", {"is_active": "1"}, follow=True)
    manual.refresh_from_db()
    assert manual.is_active and any("enabled" in message for message in flashes(response))
    assert 'data-testid="active-badge">Active<' in text(response)


def test_toggle_sets_a_state_so_a_double_submit_does_not_undo_itself(page, manual):
    for _ in range(2):
        page.post(f"/triggers/{manual.pk}/toggle", {"is_active": "0"})
    manual.refresh_from_db()
    assert not manual.is_active


# --- rotate --------------------------------------------------------------------------

def test_rotating_a_webhook_secret_shows_the_new_one_once_and_the_old_one_stops_verifying(page, webhook):
    trigger, old = webhook
    body = b'{"customer": "Ada"}'
    old_headers = _signed(old, body)
    assert webhook_verify(secret=webhook_trigger_secrets(trigger), headers=old_headers, body=body) == "msg_1"

    response = page.post(f"/triggers/{trigger.pk}/rotate", {"grace_seconds": "0"}, follow=True)
    assert response.redirect_chain == [(f"/triggers/{trigger.pk}/secret", 302)]
    new = one_time_secret(response)
    assert new and new.startswith("whsec_") and new != old
    assert "New signing secret" in text(response)
    trigger.refresh_from_db()
    with pytest.raises(WebhookVerificationError):
        webhook_verify(secret=webhook_trigger_secrets(trigger), headers=old_headers, body=body)
    assert webhook_verify(secret=webhook_trigger_secrets(trigger), headers=_signed(new, body), body=body) == "msg_1"
    assert one_time_secret(page.get(f"/triggers/{trigger.pk}/secret")) is None


def test_rotating_with_a_grace_period_keeps_the_old_secret_for_a_while(page, webhook):
    trigger, old = webhook
    body = b"{}"
    page.post(f"/triggers/{trigger.pk}/rotate", {"grace_seconds": "3600"})
    trigger.refresh_from_db()
    assert webhook_verify(secret=webhook_trigger_secrets(trigger), headers=_signed(old, body), body=body)
    assert "previous secret is still accepted" in text(page.get(f"/triggers/{trigger.pk}/"))


def test_rotating_an_api_key_revokes_the_old_key(page, api_trigger):
    trigger, old = api_trigger
    response = page.post(f"/triggers/{trigger.pk}/rotate", follow=True)
    new = one_time_secret(response)
    trigger.refresh_from_db()
    assert new and new != old
    assert api_key_matches(trigger=trigger, key=new) and not api_key_matches(trigger=trigger, key=old)


def test_rotating_a_manual_trigger_explains_why_not(page, manual):
    response = page.post(f"/triggers/{manual.pk}/rotate", follow=True)
    assert response.redirect_chain == [(f"/triggers/{manual.pk}/", 302)]
    assert any("have no secret" in message for message in flashes(response))


# --- execute -------------------------------------------------------------------------

def test_execute_now_starts_a_run_through_the_trigger_service(page, user, manual):
    response = page.post(f"/triggers/{manual.pk}/execute", {"input": '{"customer": "Ada"}'}, follow=True)
    execution = WorkflowExecution.objects.get()
    assert response.redirect_chain == [(f"/triggers/{manual.pk}/", 302)]
    assert execution.trigger == manual and execution.trigger_type == "MANUAL" and execution.started_by == user
    assert execution.input["customer"] == "Ada"
    assert execution.metadata["payload"] == {"input": {"customer": "Ada"}}
    invocation = TriggerInvocation.objects.get()
    assert invocation.status == InvocationStatus.ACCEPTED and invocation.request_meta["auth"] == "owner"
    [message] = flashes(response)
    assert str(execution.pk) in message and "PENDING" in message
    assert f'href="/executions/{execution.pk}/"' in text(response), "the run's page, not the API"
    assert "/api/executions/" not in text(response)


def test_an_api_trigger_can_be_executed_by_its_owner_from_the_page(page, api_trigger):
    page.post(f"/triggers/{api_trigger[0].pk}/execute", {"input": '{"customer": "Ada"}'})
    assert WorkflowExecution.objects.get().trigger_type == "API"


def test_a_resubmitted_form_starts_one_run(page, manual):
    data = {"input": '{"customer": "Ada"}', "submission": "a1b2c3"}
    page.post(f"/triggers/{manual.pk}/execute", data)
    response = page.post(f"/triggers/{manual.pk}/execute", data, follow=True)
    assert WorkflowExecution.objects.count() == 1
    assert any("already started" in message for message in flashes(response))


@pytest.mark.parametrize(
    ("input", "needle"),
    [
        ('{"customer": ', "Input is not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"customer": 5, "typo": 1}', "The input is invalid"),
        ("{}", "customer"),
    ],
)
def test_execute_errors_are_shown_on_the_page(page, manual, input, needle):
    response = page.post(f"/triggers/{manual.pk}/execute", {"input": input})
    assert response.status_code == 200
    assert needle in text(response)
    assert input in text(response) or input.replace('"', "&quot;") in text(response), "the typed input is kept"
    assert not WorkflowExecution.objects.exists()


def test_executing_a_disabled_trigger_is_refused_with_the_message(page, workflow):
    trigger, _ = create_trigger(workflow, "MANUAL", is_active=False)
    response = page.post(f"/triggers/{trigger.pk}/execute", {"input": '{"customer": "Ada"}'})
    assert response.status_code == 200 and "is disabled" in text(response)
    assert not WorkflowExecution.objects.exists()


def test_a_webhook_trigger_cannot_be_executed_from_the_page(page, webhook):
    response = page.post(f"/triggers/{webhook[0].pk}/execute", {"input": "{}"}, follow=True)
    assert response.redirect_chain == [(f"/triggers/{webhook[0].pk}/", 302)]
    assert any("cannot be executed" in message for message in flashes(response))
    assert not WorkflowExecution.objects.exists()


def test_execute_with_htmx_answers_a_partial_with_the_result_and_fresh_activity(page, manual):
    response = page.post(f"/triggers/{manual.pk}/execute", {"input": '{"customer": "Ada"}', "submission": "x1"},
                         HTTP_HX_REQUEST="true")
    execution = WorkflowExecution.objects.get()
    body = text(response)
    assert response.status_code == 200 and "<html" not in body
    assert 'id="execute-panel"' in body and str(execution.pk) in body
    assert 'id="trigger-activity"' in body and 'hx-swap-oob="true"' in body
    assert 'data-metric="executions_total">1<' in body
    assert "&quot;customer&quot;: &quot;Ada&quot;" in body, "the typed input stays for the next run"
    assert 'name="submission"' in body and 'value="x1"' not in body, "with a new submission id"
    assert not list(response.wsgi_request._messages), "the result is in the partial, not left for the next page"


def test_execute_with_htmx_shows_errors_in_the_panel(page, manual):
    response = page.post(f"/triggers/{manual.pk}/execute", {"input": "{}"}, HTTP_HX_REQUEST="true")
    body = text(response)
    assert response.status_code == 200 and "The input is invalid" in body and "hx-swap-oob" not in body


# --- delete --------------------------------------------------------------------------

def test_delete_asks_first_then_deletes_and_keeps_the_runs(page, manual):
    page.post(f"/triggers/{manual.pk}/execute", {"input": '{"customer": "Ada"}'})
    confirm = page.get(f"/triggers/{manual.pk}/delete")
    assert confirm.status_code == 200 and "Delete trigger" in text(confirm)
    assert WorkflowTrigger.objects.filter(pk=manual.pk).exists()
    response = page.post(f"/triggers/{manual.pk}/delete", follow=True)
    assert response.redirect_chain == [("/triggers/", 302)]
    assert not WorkflowTrigger.objects.filter(pk=manual.pk).exists()
    assert WorkflowExecution.objects.get().trigger is None
    assert any("deleted" in message for message in flashes(response))
    assert page.get(f"/triggers/{manual.pk}/").status_code == 404
