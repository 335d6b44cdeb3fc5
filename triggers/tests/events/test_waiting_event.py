"""``execution.waiting``: a run parked on an approval or a delay emits it (the event sweep
sends it again if its message was lost), so an EVENT trigger (or a workflow that calls
out) can tell someone; the payload never carries the signed approval link."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from promptpilot.common import task_names
from triggers.models import TriggerInvocation
from triggers.receivers import dispatch_waiting_event
from triggers.services.events import event_dispatch_for_wait, event_redeliver_missed
from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services.approvals import approval_decide
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


# --- a lost queueing is swept again (triggers.redeliver_events), once per trigger -------------


def _later(seconds: float = 60):
    return timezone.now() + timedelta(seconds=seconds)


@pytest.fixture
def broker_down_for_events(monkeypatch, settings):
    """Workflow messages are captured and driven; queueing the waiting event fails, as with an
    unreachable broker (the receiver logs it and the run parks anyway)."""
    messages = capture_broker(monkeypatch, settings)

    def unreachable(args):
        raise ConnectionError("broker down")

    monkeypatch.setattr(dispatch_waiting_event, "apply_async", unreachable)
    return messages


def test_a_waiting_event_lost_at_enqueue_is_sent_again_by_the_sweep_once(user, broker_down_for_events):
    trigger = event_trigger(_notifier(user), event="execution.waiting")
    waiting = _parked(user, broker_down_for_events)
    assert waiting.status == "WAITING" and waiting.event_dispatched_at is None
    assert not TriggerInvocation.objects.filter(trigger=trigger).exists(), "the event's message was lost"

    assert event_redeliver_missed(now=timezone.now()) == 0, "within the grace its task may still be on its way"
    assert event_redeliver_missed(now=_later()) == 1
    assert WorkflowStepExecution.objects.get(pk=waiting.pk).event_dispatched_at is not None
    assert event_redeliver_missed(now=_later()) == 0
    drive(broker_down_for_events)
    notified = WorkflowExecution.objects.get(trigger=trigger)
    assert notified.output == "execution.waiting: Refund order 42? (review)"
    assert TriggerInvocation.objects.get(trigger=trigger).delivery_id == f"event:execution.waiting:{waiting.pk}"


def test_duplicates_of_the_waiting_event_start_one_run_per_trigger(user, sent):
    first = event_trigger(_notifier(user), event="execution.waiting")
    second = event_trigger(_notifier(user), event="execution.waiting", filter={"step": "review"})
    waiting = _parked(user, sent)
    # The queued task and a broker redelivery of it both run; the sweep then finds it marked.
    assert dispatch_waiting_event.run(str(waiting.pk)) == 2
    assert [m.status for m in event_dispatch_for_wait(step_execution_id=waiting.pk)] == ["DUPLICATE", "DUPLICATE"]
    assert event_redeliver_missed(now=_later()) == 0
    for trigger in (first, second):
        assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1


def test_the_sweep_leaves_decided_waits_and_triggers_created_later_alone(user, sent):
    listener = event_trigger(_notifier(user), event="execution.waiting")
    decided = _parked(user, sent)  # its event's message is captured, never delivered
    approval_decide(execution=decided.execution, approved=True, decided_by=user.username)
    assert event_redeliver_missed(now=_later()) == 0, "an approval already decided is no news"
    assert not WorkflowExecution.objects.filter(trigger=listener).exists()

    listener.delete()
    _parked(user, sent)
    late = event_trigger(_notifier(user), event="execution.waiting")  # created after the step parked
    assert event_redeliver_missed(now=_later()) == 0
    assert not WorkflowExecution.objects.filter(trigger=late).exists()
