"""Platform event delivery: the receiver, the ``triggers.dispatch_event`` task, idempotency
and the depth limit that stops loops (``triggers/receivers.py``, ``services/events.py``)."""
from __future__ import annotations

from unittest import mock

import pytest

from promptpilot.celery import app
from triggers.models import InvocationStatus, TriggerInvocation
from triggers.receivers import dispatch_event
from triggers.services.events import event_dispatch_for_execution
from workflows.models import WorkflowExecution
from workflows.services.transitions import _announce_finished

from .helpers import event_trigger, finish, finished_run, source_workflow, target_workflow

pytestmark = pytest.mark.django_db


def test_dispatching_the_same_platform_event_twice_starts_one_run_per_trigger(user):
    source, target = source_workflow(user), target_workflow(user)
    first, second = event_trigger(target), event_trigger(target, filter={"workflow": source.pk})
    run = finished_run(source)

    initial = event_dispatch_for_execution(execution_id=run.pk)
    again = event_dispatch_for_execution(execution_id=run.pk)

    assert [m.status for m in initial] == ["ACCEPTED", "ACCEPTED"]
    assert [m.status for m in again] == ["DUPLICATE", "DUPLICATE"]
    assert [m.execution_id for m in again] == [m.execution_id for m in initial]
    for trigger in (first, second):
        assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1
        statuses = sorted(TriggerInvocation.objects.filter(trigger=trigger).values_list("status", flat=True))
        assert statuses == [InvocationStatus.ACCEPTED, InvocationStatus.DUPLICATE]


def test_a_redelivered_refusal_is_not_recorded_twice(user):
    source = source_workflow(user)
    strict = target_workflow(user, variables=[{"name": "customer", "type": "STRING", "required": True}])
    trigger = event_trigger(strict)
    run = finished_run(source)
    event_dispatch_for_execution(execution_id=run.pk)
    [again] = event_dispatch_for_execution(execution_id=run.pk)
    assert again.status == InvocationStatus.INVALID_INPUT
    assert TriggerInvocation.objects.filter(trigger=trigger).count() == 1
    assert not WorkflowExecution.objects.filter(trigger=trigger).exists()


def test_the_task_is_registered_durable_and_dispatches(user):
    task = app.tasks["triggers.dispatch_event"]
    assert task.acks_late and task.reject_on_worker_lost
    source, target = source_workflow(user), target_workflow(user)
    trigger = event_trigger(target)
    assert dispatch_event.run(str(finished_run(source).pk)) == 1
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1
    assert dispatch_event.run("0b6c1f3e-8a47-4c1f-9d59-000000000000") == 0, "a missing run is logged and skipped"


# --- the receiver --------------------------------------------------------------------------


@pytest.fixture
def sent():
    with mock.patch.object(dispatch_event, "apply_async") as apply_async:
        yield apply_async


def announce(execution, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _announce_finished(execution.pk)


@pytest.mark.parametrize(("status", "event"), [("COMPLETED", "execution.completed"), ("FAILED", "execution.failed")])
def test_a_finished_run_with_listeners_queues_the_dispatch_task(user, sent, django_capture_on_commit_callbacks,
                                                                 status, event):
    source, target = source_workflow(user), target_workflow(user)
    event_trigger(target, event=event)
    run = finished_run(source, status)
    announce(run, django_capture_on_commit_callbacks)
    sent.assert_called_once_with(args=[str(run.pk)])


def test_no_message_is_sent_when_nothing_listens(user, other_user, sent, django_capture_on_commit_callbacks):
    source = source_workflow(user)
    event_trigger(target_workflow(other_user))  # someone else's listener does not count
    event_trigger(target_workflow(user), event="execution.failed")  # another event does not either
    inactive = event_trigger(target_workflow(user))
    inactive.is_active = False
    inactive.save()
    announce(finished_run(source), django_capture_on_commit_callbacks)
    announce(finished_run(source, "CANCELLED"), django_capture_on_commit_callbacks)
    sent.assert_not_called()


def test_a_broker_failure_does_not_break_the_run_ending(user, sent, django_capture_on_commit_callbacks):
    sent.side_effect = ConnectionError("broker down")
    source, target = source_workflow(user), target_workflow(user)
    event_trigger(target)
    announce(finished_run(source), django_capture_on_commit_callbacks)  # logged, not raised
    sent.assert_called_once()


# --- loop protection ------------------------------------------------------------------------


def run_loop(workflow, first_run) -> list[WorkflowExecution]:
    """Finish each run and deliver its event, as the worker would, until nothing new starts."""
    runs = [first_run]
    while True:
        matches = event_dispatch_for_execution(execution_id=finish(runs[-1]).pk)
        started = [m.execution_id for m in matches if m.status == "ACCEPTED"]
        if not started:
            return runs
        assert len(started) == 1
        runs.append(WorkflowExecution.objects.get(pk=started[0]))
        assert len(runs) < 50, "the loop did not stop"


def test_a_self_triggering_workflow_stops_at_the_depth_limit_and_says_why(user):
    loop = source_workflow(user, name="Loop")
    trigger = event_trigger(loop, filter={"workflow": loop.pk})
    first = finished_run(loop, "RUNNING")

    runs = run_loop(loop, first)

    assert len(runs) == 1 + 5, "the manual run, then PROMPTPILOT_EVENT_MAX_DEPTH (5) event-started runs"
    assert [r.metadata.get("event_depth") for r in runs] == [None, 1, 2, 3, 4, 5]
    assert runs[-1].metadata["event_chain"] == [str(r.pk) for r in runs[:-1]]
    assert all(r.trigger_type == "EVENT" for r in runs[1:])
    last = TriggerInvocation.objects.filter(trigger=trigger).order_by("-received_at").first()
    assert last.status == InvocationStatus.REJECTED and last.execution is None
    assert "depth limit" in last.error and "PROMPTPILOT_EVENT_MAX_DEPTH is 5" in last.error
    assert last.request_meta["event_depth"] == 6
    assert last.payload["execution"] == str(runs[-1].pk)
    # redelivering the refused event records nothing new
    event_dispatch_for_execution(execution_id=runs[-1].pk)
    assert TriggerInvocation.objects.filter(trigger=trigger, status="REJECTED").count() == 1


def test_the_depth_limit_is_a_setting_and_counts_chains_across_workflows(user, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "EVENT_MAX_DEPTH": 2}
    ping, pong = source_workflow(user, name="Ping"), source_workflow(user, name="Pong")
    event_trigger(pong, filter={"workflow": ping.pk})
    event_trigger(ping, filter={"workflow": pong.pk})

    runs = run_loop(ping, finished_run(ping, "RUNNING"))

    assert [r.workflow_id for r in runs] == [ping.pk, pong.pk, ping.pk]
    assert TriggerInvocation.objects.filter(status="REJECTED").count() == 1


def test_custom_events_start_chains_at_depth_one(user):
    from triggers.services.events import event_emit

    target = target_workflow(user)
    event_trigger(target, event="order.created")
    _, [match] = event_emit(owner=user, name="order.created", payload={"id": 1})
    started = WorkflowExecution.objects.get(pk=match.execution_id)
    assert started.metadata["event_depth"] == 1 and started.metadata["event_chain"] == []
    assert started.started_by == user
