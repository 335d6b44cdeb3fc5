"""EVENT triggers end to end: real Celery workers on PostgreSQL + Redis run workflow A, the
``triggers.dispatch_event`` task delivers its platform event, and workflow B runs."""
from __future__ import annotations

import time

import pytest

from triggers.models import InvocationStatus, TriggerInvocation
from workflows.models import WorkflowExecution
from workflows.tests.durability.helpers import wait_finished, wait_for
from workflows.tests.factories import make_workflow

from .helpers import event_trigger

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def start(api, workflow, inputs=None) -> str:
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": inputs or {}}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def started_by(trigger, timeout: float = 30) -> WorkflowExecution:
    return wait_for(lambda: WorkflowExecution.objects.filter(trigger=trigger).first(), timeout,
                    f"a run started by trigger {trigger.name}")


def test_completion_of_a_starts_b(api, user, shared_worker):
    a = make_workflow(user, name="A", variables=[{"name": "topic", "type": "STRING", "required": True}],
                      steps=[{"name": "write", "type": "TRANSFORM",
                              "config": {"template": '{"category": "{{ input.topic }}"}', "output_format": "json"}}])
    b = make_workflow(
        user, name="B", variables=[{"name": "category", "type": "STRING", "required": True}],
        steps=[{"name": "react", "type": "TRANSFORM",
                "config": {"template": "{{ trigger.type }} {{ trigger.payload.event }} from workflow "
                                       "{{ trigger.payload.workflow }} ({{ trigger.payload.status }}): "
                                       "{{ input.category }}"}}],
    )
    trigger = event_trigger(b, filter={"workflow": a.pk, "output.category": "billing"},
                            input_mapping={"category": "payload.output.category | upper"})

    source = wait_finished(start(api, a, {"topic": "billing"}), timeout=30)
    assert source.status == "COMPLETED", source.error

    finished = wait_finished(started_by(trigger).pk, timeout=30)
    assert finished.status == "COMPLETED", finished.error
    assert finished.trigger_type == "EVENT" and finished.workflow_id == b.pk
    assert finished.output == f"EVENT execution.completed from workflow {a.pk} (COMPLETED): BILLING"
    assert finished.metadata["event_depth"] == 1 and finished.metadata["event_chain"] == [str(source.pk)]
    invocation = TriggerInvocation.objects.get(trigger=trigger)
    assert invocation.delivery_id == f"event:execution.completed:{source.pk}"

    # a run whose output does not match the filter starts nothing
    other = wait_finished(start(api, a, {"topic": "sales"}), timeout=30)
    assert other.status == "COMPLETED"
    time.sleep(2)
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1


def test_failure_of_a_starts_its_error_workflow(api, user, shared_worker):
    a = make_workflow(user, name="Fragile",
                      steps=[{"name": "parse", "type": "TRANSFORM",
                              "config": {"template": "not json", "output_format": "json"}}])
    handler = make_workflow(
        user, name="Error handler",
        steps=[{"name": "report", "type": "TRANSFORM",
                "config": {"template": "run {{ trigger.payload.execution }} of {{ trigger.payload.workflow }} "
                                       "failed in {{ trigger.payload.error.step }}: "
                                       "{{ trigger.payload.error.type }}"}}],
    )
    on_failure = event_trigger(handler, event="execution.failed", filter={"workflow": a.pk})
    on_success = event_trigger(handler, event="execution.completed", filter={"workflow": a.pk})

    failed = wait_finished(start(api, a), timeout=30)
    assert failed.status == "FAILED" and failed.error["type"] == "InvalidOutput"

    handled = wait_finished(started_by(on_failure).pk, timeout=30)
    assert handled.status == "COMPLETED", handled.error
    assert handled.trigger_type == "EVENT"
    assert handled.output == f"run {failed.pk} of {a.pk} failed in parse: InvalidOutput"
    assert not WorkflowExecution.objects.filter(trigger=on_success).exists()


def test_a_self_triggering_loop_stops_at_the_depth_limit(api, user, shared_worker):
    loop = make_workflow(user, name="Loop",
                         steps=[{"name": "again", "type": "TRANSFORM",
                                 "config": {"template": "depth {{ trigger.payload.event | default('none') }}"}}])
    trigger = event_trigger(loop, filter={"workflow": loop.pk})

    first = start(api, loop)
    refusal = wait_for(
        lambda: TriggerInvocation.objects.filter(trigger=trigger, status=InvocationStatus.REJECTED).first(),
        60, "the depth limit to refuse a firing",
    )
    assert "depth limit" in refusal.error and "PROMPTPILOT_EVENT_MAX_DEPTH is 5" in refusal.error

    runs = list(WorkflowExecution.objects.filter(workflow=loop).order_by("created_at"))
    assert len(runs) == 1 + 5, "the first run, then PROMPTPILOT_EVENT_MAX_DEPTH (5) event-started runs"
    assert str(runs[0].pk) == first
    assert all(r.status == "COMPLETED" for r in runs)
    assert [r.metadata.get("event_depth") for r in runs] == [None, 1, 2, 3, 4, 5]
    assert refusal.payload["execution"] == str(runs[-1].pk)
    time.sleep(2)  # nothing else starts afterwards
    assert WorkflowExecution.objects.filter(workflow=loop).count() == 6
    assert TriggerInvocation.objects.filter(trigger=trigger).count() == 6
