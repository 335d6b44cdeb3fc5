"""``execution.waiting``: a run parked on an approval or a delay emits it, so an EVENT
trigger (or a workflow that calls out) can tell someone; the payload never carries the
signed approval link."""
from __future__ import annotations

import pytest

from promptpilot.common import task_names
from triggers.models import TriggerInvocation
from triggers.receivers import dispatch_waiting_event
from triggers.services.events import event_dispatch_for_wait
from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

from .helpers import event_trigger

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch, settings):
    messages = capture_broker(monkeypatch, settings)
    monkeypatch.setattr(dispatch_waiting_event, "apply_async",
                        lambda args: messages.append((task_names.DISPATCH_WAITING_EVENT, args, None)))
    return messages


def _notifier(owner):
    return make_workflow(owner, name="Notifier", variables=[{"name": "step", "type": "STRING", "required": False}],
                         steps=[{"name": "tell", "type": "TRANSFORM", "config": {
                             "template": "{{ trigger.payload.event }}: {{ trigger.payload.output.message }} "
                                         "({{ input.step }})"}}])


def _parked(owner, sent) -> WorkflowStepExecution:
    workflow = make_workflow(owner, name="Needs a yes", steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Refund order 42?"}}])
    run = execution_start(workflow=workflow, inputs={}, started_by=owner)
    drive(sent)
    return WorkflowStepExecution.objects.get(execution=run, step_name="review")


def test_a_waiting_run_emits_execution_waiting_to_the_owners_listeners(user, sent):
    # The payload's top-level "step" fills the notifier's variable of that name.
    trigger = event_trigger(_notifier(user), event="execution.waiting", filter={"step_type": "APPROVAL"})
    waiting = _parked(user, sent)
    queued = [args for name, args, _ in sent if name == task_names.DISPATCH_WAITING_EVENT]
    assert queued == [[str(waiting.pk)]]
    sent.clear()
    [match] = event_dispatch_for_wait(step_execution_id=waiting.pk)
    assert match.status == "ACCEPTED"
    assert [m.status for m in event_dispatch_for_wait(step_execution_id=waiting.pk)] == ["DUPLICATE"]
    invocation = TriggerInvocation.objects.get(trigger=trigger, status="ACCEPTED")
    assert invocation.payload["event"] == "execution.waiting"
    assert invocation.payload["execution"] == str(waiting.execution_id)
    assert "approval_url" not in invocation.payload["output"]
    drive(sent)
    notified = WorkflowExecution.objects.get(trigger=trigger)
    assert notified.output == "execution.waiting: Refund order 42? (review)"


def test_no_listener_no_message(user, other_user, sent):
    event_trigger(_notifier(other_user), event="execution.waiting")  # someone else's trigger
    _parked(user, sent)
    assert not [m for m in sent if m[0] == task_names.DISPATCH_WAITING_EVENT]


def test_execution_waiting_is_a_known_platform_event_and_its_filter_keys_are_checked(user, api):
    workflow = _notifier(user)
    ok = api.post("/api/triggers/", {"workflow": workflow.pk, "type": "EVENT", "name": "w",
                                     "config": {"event": "execution.waiting", "filter": {"step": "review"}}},
                  format="json")
    assert ok.status_code == 201, ok.json()
    bad = api.post("/api/triggers/", {"workflow": workflow.pk, "type": "EVENT", "name": "w2",
                                      "config": {"event": "execution.waiting", "filter": {"colour": "red"}}},
                   format="json")
    assert bad.status_code == 400 and "step_type" in bad.json()["message"]
