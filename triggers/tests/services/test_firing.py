"""``trigger_fire`` (``triggers/services/firing.py``): one service for every trigger type."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from triggers.errors import TriggerInputInvalid, TriggerRejected
from triggers.models import InvocationStatus, TriggerInvocation
from triggers.services.firing import trigger_fire
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db


def test_accepted_firing_records_invocation_and_starts_a_pending_run(manual, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        invocation = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={"customer": "Ada", "x": 1})
    assert len(callbacks) == 1, "the run is enqueued once, after commit"
    invocation.refresh_from_db()
    execution = invocation.execution
    assert invocation.status == InvocationStatus.ACCEPTED and invocation.verified
    assert execution.status == "PENDING" and execution.trigger_id == manual.pk and execution.trigger_type == "MANUAL"
    assert execution.input == {"customer": "Ada", "amount": None}
    assert execution.metadata["payload"] == {"customer": "Ada", "x": 1}
    assert execution.metadata["invocation_id"] == str(invocation.pk)
    assert execution.metadata["trigger_id"] == str(manual.pk)
    manual.refresh_from_db()
    assert manual.last_triggered_at is not None


def test_invalid_input_is_recorded_with_the_reason_and_starts_nothing(manual):
    with pytest.raises(TriggerInputInvalid) as caught:
        trigger_fire(trigger=manual, inputs={"amount": "12"}, payload={"amount": "12"}, delivery_id="d-1")
    invocation = TriggerInvocation.objects.get()
    assert caught.value.extra["invocation_id"] == str(invocation.pk)
    assert set(caught.value.extra["errors"]) == {"customer", "amount"}
    assert invocation.status == InvocationStatus.INVALID_INPUT
    assert "customer" in invocation.error and "amount" in invocation.error
    assert invocation.delivery_id is None, "a refused delivery does not claim its id; a fixed retry can use it"
    assert invocation.execution is None
    assert WorkflowExecution.objects.count() == 0
    manual.refresh_from_db()
    assert manual.last_triggered_at is None


def test_same_delivery_id_starts_one_run_and_returns_the_first_invocation(manual):
    first = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}, delivery_id="d-1")
    again = trigger_fire(trigger=manual, inputs={"customer": "Bob"}, payload={}, delivery_id="d-1")
    assert again.pk == first.pk and again.was_duplicate and not first.was_duplicate
    assert WorkflowExecution.objects.count() == 1
    duplicate = TriggerInvocation.objects.get(status=InvocationStatus.DUPLICATE)
    assert duplicate.execution_id == first.execution_id and duplicate.delivery_id is None
    assert duplicate.request_meta["duplicate_of"] == str(first.pk)


def test_a_delivery_refused_for_its_input_can_be_retried_with_the_same_id(manual):
    with pytest.raises(TriggerInputInvalid):
        trigger_fire(trigger=manual, inputs={}, payload={}, delivery_id="d-1")
    accepted = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}, delivery_id="d-1")
    assert accepted.status == InvocationStatus.ACCEPTED and not accepted.was_duplicate


def test_inactive_workflow_is_recorded_rejected(manual):
    manual.workflow.is_active = False
    manual.workflow.save()
    with pytest.raises(TriggerRejected) as caught:
        trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={})
    assert caught.value.status_code == 409
    assert TriggerInvocation.objects.get().status == InvocationStatus.REJECTED
    assert WorkflowExecution.objects.count() == 0


def test_trigger_type_is_recorded_on_the_execution(webhook, api_trigger):
    for trigger, _ in (webhook, api_trigger):
        invocation = trigger_fire(trigger=trigger, inputs={"customer": "Ada"}, payload={})
        assert invocation.execution.trigger_type == trigger.type


def test_last_triggered_at_is_kept_when_recent_and_moved_on_when_older(manual, monkeypatch):
    """Written at most once per LAST_TRIGGERED_RESOLUTION, so the deliveries of a busy
    trigger do not all queue on its row."""
    import triggers.services.firing as firing
    from triggers.models import WorkflowTrigger

    recent = timezone.now() - timedelta(minutes=10)
    WorkflowTrigger.objects.filter(pk=manual.pk).update(last_triggered_at=recent)
    manual.refresh_from_db()
    monkeypatch.setattr(firing, "LAST_TRIGGERED_RESOLUTION", timedelta(hours=1))
    trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={})
    manual.refresh_from_db()
    assert manual.last_triggered_at == recent, "ten minutes is recent at a one-hour resolution"

    monkeypatch.setattr(firing, "LAST_TRIGGERED_RESOLUTION", timedelta(seconds=1))
    invocation = trigger_fire(trigger=manual, inputs={"customer": "Bob"}, payload={})
    manual.refresh_from_db()
    assert manual.last_triggered_at == invocation.execution.created_at
