"""Which EVENT triggers an event starts, and with what (``triggers/services/events.py``)."""
from __future__ import annotations

import pytest

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.services.events import (
    event_dispatch_for_execution,
    event_emit,
    filter_matches,
    json_equal,
    payload_lookup,
)
from workflows.models import WorkflowExecution

from .helpers import event_trigger, finished_run, source_workflow, target_workflow

PAYLOAD = {"workflow": 7, "output": {"category": "billing", "score": 3, "items": [{"sku": "A-1"}]}, "error": None}


# --- pure matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "found", "value"),
    [
        ("workflow", True, 7),
        ("output.category", True, "billing"),
        ("output.items.0.sku", True, "A-1"),
        ("error", True, None),
        ("output.missing", False, None),
        ("output.items.5.sku", False, None),
        ("output.category.deeper", False, None),
    ],
)
def test_payload_lookup_follows_dotted_paths(path, found, value):
    assert payload_lookup(PAYLOAD, path) == (found, value)


def test_json_equality_does_not_confuse_booleans_and_numbers():
    assert json_equal(1, 1.0) and json_equal("a", "a") and json_equal(None, None) and json_equal(True, True)
    assert not json_equal(True, 1) and not json_equal(0, False) and not json_equal("1", 1)
    assert not json_equal(None, "") and not json_equal(None, 0)


@pytest.mark.parametrize(
    ("event_filter", "matches"),
    [
        ({}, True),
        ({"workflow": 7}, True),
        ({"workflow": 7, "output.category": "billing", "output.score": 3.0}, True),
        ({"error": None}, True),
        ({"workflow": 8}, False),
        ({"workflow": "7"}, False),
        ({"workflow": 7, "output.category": "sales"}, False),
        ({"output.missing": None}, False),
    ],
)
def test_every_filter_equality_must_hold(event_filter, matches):
    assert filter_matches(event_filter, PAYLOAD) is matches


# --- dispatch ------------------------------------------------------------------------------



@pytest.mark.django_db
def test_completion_starts_the_triggers_whose_event_and_filter_match(user):
    source, other = source_workflow(user), source_workflow(user, name="Other")
    target = target_workflow(user)
    on_source = event_trigger(target, filter={"workflow": source.pk})
    on_billing = event_trigger(target, filter={"output.category": "billing"})
    unfiltered = event_trigger(target)
    event_trigger(target, filter={"workflow": other.pk})  # another workflow: no match
    event_trigger(target, filter={"output.category": "sales"})  # other value: no match
    event_trigger(target, event="execution.failed")  # other event: no match
    event_trigger(target, event="order.created")  # custom event: no match
    inactive = event_trigger(target)
    inactive.is_active = False
    inactive.save()

    run = finished_run(source, output={"category": "billing"})
    matches = event_dispatch_for_execution(execution_id=run.pk)

    assert [m.trigger_id for m in matches] == [on_source.pk, on_billing.pk, unfiltered.pk]
    assert {m.status for m in matches} == {"ACCEPTED"}
    started = WorkflowExecution.objects.filter(trigger__isnull=False)
    assert started.count() == 3
    assert not TriggerInvocation.objects.filter(trigger=inactive).exists()


@pytest.mark.django_db
def test_failure_emits_execution_failed_with_the_design_payload(user):
    source, target = source_workflow(user), target_workflow(user)
    error_handler = event_trigger(target, event="execution.failed", filter={"workflow": source.pk})
    event_trigger(target, event="execution.completed", filter={"workflow": source.pk})
    error = {"type": "InvalidOutput", "message": "not JSON", "step": "work", "details": {}}

    run = finished_run(source, "FAILED", error=error)
    [match] = event_dispatch_for_execution(execution_id=run.pk)

    assert match.trigger_id == error_handler.pk
    started = WorkflowExecution.objects.get(pk=match.execution_id)
    assert started.trigger_type == "EVENT" and started.trigger_id == error_handler.pk
    assert started.metadata["payload"] == {
        "event": "execution.failed", "workflow": source.pk, "execution": str(run.pk), "status": "FAILED",
        "output": None, "error": error,
    }
    assert started.input == {"status": "FAILED", "output": None}, "payload keys that are variables become inputs"
    assert started.metadata["event_depth"] == 1 and started.metadata["event_chain"] == [str(run.pk)]
    invocation = TriggerInvocation.objects.get(pk=match.invocation_id)
    assert invocation.delivery_id == f"event:execution.failed:{run.pk}"
    assert invocation.payload == started.metadata["payload"]


@pytest.mark.django_db
def test_cancelled_runs_emit_nothing(user):
    source, target = source_workflow(user), target_workflow(user)
    event_trigger(target, event="execution.failed")
    event_trigger(target, event="execution.completed")
    run = finished_run(source, "CANCELLED", error={"type": "Cancelled", "message": "x", "step": None, "details": {}})
    assert event_dispatch_for_execution(execution_id=run.pk) == []
    assert not TriggerInvocation.objects.exists()


@pytest.mark.django_db
def test_input_mapping_expressions_fill_variables_from_the_payload(user):
    source = source_workflow(user)
    target = target_workflow(user, variables=[{"name": "category", "type": "STRING", "required": True}])
    event_trigger(target, input_mapping={"category": "payload.output.category | upper"})
    [match] = event_dispatch_for_execution(execution_id=finished_run(source, output={"category": "billing"}).pk)
    assert WorkflowExecution.objects.get(pk=match.execution_id).input == {"category": "BILLING"}


@pytest.mark.django_db
def test_a_refused_match_is_recorded_and_does_not_stop_the_others(user):
    source = source_workflow(user)
    strict = target_workflow(user, name="Needs customer",
                             variables=[{"name": "customer", "type": "STRING", "required": True}])
    mapped = target_workflow(user, name="Mapped", variables=[{"name": "category", "type": "STRING"}])
    lenient = target_workflow(user, name="Lenient")
    first = event_trigger(strict)
    second = event_trigger(mapped, input_mapping={"category": "payload.output.nothing.here"})
    third = event_trigger(lenient)

    matches = event_dispatch_for_execution(execution_id=finished_run(source, output={"x": 1}).pk)

    assert [(m.trigger_id, m.status) for m in matches] == [
        (first.pk, InvocationStatus.INVALID_INPUT), (second.pk, InvocationStatus.INVALID_INPUT),
        (third.pk, InvocationStatus.ACCEPTED),
    ]
    refused = TriggerInvocation.objects.get(trigger=first)
    assert "customer" in refused.error and refused.execution is None
    assert refused.request_meta["delivery_id"].startswith("event:execution.completed:")
    assert "input_mapping" in TriggerInvocation.objects.get(trigger=second).error
    assert WorkflowExecution.objects.filter(trigger=third).count() == 1


@pytest.mark.django_db
def test_an_inactive_target_workflow_is_recorded_rejected(user):
    source = source_workflow(user)
    target = target_workflow(user)
    event_trigger(target)
    target.is_active = False
    target.save()
    [match] = event_dispatch_for_execution(execution_id=finished_run(source).pk)
    assert match.status == InvocationStatus.REJECTED and match.execution_id is None
    assert "inactive" in TriggerInvocation.objects.get().error


# --- isolation -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_another_users_trigger_never_fires_from_my_runs(user, other_user):
    mine = source_workflow(user)
    theirs = target_workflow(other_user)
    event_trigger(theirs)  # listens for every execution.completed... of its owner only
    event_trigger(theirs, event="execution.failed")
    event_trigger(theirs, event="order.created")
    mine_target = target_workflow(user)
    my_trigger = event_trigger(mine_target)

    matches = event_dispatch_for_execution(execution_id=finished_run(mine).pk)
    matches += event_dispatch_for_execution(execution_id=finished_run(mine, "FAILED").pk)
    _, emitted = event_emit(owner=user, name="order.created", payload={"workflow": theirs.pk})

    assert [m.trigger_id for m in matches + emitted] == [my_trigger.pk]
    assert not WorkflowExecution.objects.filter(workflow=theirs).exists()
    assert not TriggerInvocation.objects.filter(trigger__workflow=theirs).exists()
