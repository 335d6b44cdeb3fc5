"""The waiting mechanism: a step that parks its run WAITING (no task, no lease), and the
one resume that moves it on (fenced: a late or duplicate resume is a no-op), with cancel,
the run's timeout, the concurrency cap and the reaper's backstops. DELAY steps drive it
here; approvals have their own tests (test_approvals.py).

In-process, without a broker: ``dispatch._send`` is replaced by a list of what a worker
would have received, with countdowns.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from promptpilot.common import task_names
from workflows.models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services import orchestration
from workflows.services.executions import execution_cancel, execution_start
from workflows.services.reaper import reaper_sweep
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run, as in a worker


@pytest.fixture
def sent(monkeypatch, settings):
    return capture_broker(monkeypatch, settings)


def _delay_workflow(user, seconds=60, **fields):
    return make_workflow(user, steps=[
        {"name": "pause", "type": "DELAY", "config": {"seconds": seconds}},
        {"name": "after", "type": "TRANSFORM", "config": {"template": "done after {{ steps.pause.output.until }}"}},
    ], **fields)


def _waiting_step(execution) -> WorkflowStepExecution:
    return WorkflowStepExecution.objects.get(execution=execution, step_name="pause")


def _make_due(step: WorkflowStepExecution, seconds_ago: float = 1) -> None:
    WorkflowStepExecution.objects.filter(pk=step.pk).update(available_at=timezone.now() - timedelta(seconds=seconds_ago))


def test_a_delay_parks_the_run_waiting_with_no_task_and_no_lease(user, sent):
    run = execution_start(workflow=_delay_workflow(user, seconds=60), inputs={}, started_by=user)
    drive(sent)
    run.refresh_from_db()
    step = _waiting_step(run)
    assert run.status == ExecutionStatus.WAITING
    assert step.status == StepExecutionStatus.WAITING and step.lease_expires_at is None
    assert timedelta(seconds=55) < step.available_at - timezone.now() <= timedelta(seconds=60)
    assert step.output == {"until": step.available_at.isoformat()}
    # Nothing left to run: the only message is the timer's countdown.
    assert [(name, args) for name, args, _ in sent] == [(task_names.RESUME_WAIT, [str(step.pk)])]
    assert 55 < sent[0][2] <= 60
    assert not WorkflowStepExecution.objects.filter(execution=run, step_name="after").exists()


def test_the_timer_resumes_the_run_once_and_a_duplicate_or_early_one_is_a_no_op(user, sent):
    run = execution_start(workflow=_delay_workflow(user), inputs={}, started_by=user)
    drive(sent)
    step = _waiting_step(run)
    assert orchestration.wait_timer_fire(step_execution_id=step.pk) == "early"  # not due: sent again
    assert sent[-1][0] == task_names.RESUME_WAIT and sent[-1][2] > 50
    _make_due(step)
    assert orchestration.wait_timer_fire(step_execution_id=step.pk) == "resumed"
    assert orchestration.wait_timer_fire(step_execution_id=step.pk) == "not-waiting"
    sent.clear()
    step.refresh_from_db()
    assert step.status == StepExecutionStatus.COMPLETED and step.attempt == 2
    run.refresh_from_db()
    assert run.status == ExecutionStatus.RUNNING
    after = WorkflowStepExecution.objects.get(execution=run, step_name="after")
    assert after.status == StepExecutionStatus.PENDING
    # The continuation is a PENDING row (the outbox), sent after the resume committed.
    sent.append((task_names.RUN_STEP, [str(after.pk), 1], None))
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.COMPLETED
    assert run.output == f"done after {step.output['until']}"
    assert WorkflowStepExecution.objects.filter(execution=run, step_name="after").count() == 1


def test_until_in_the_past_goes_on_at_once(user, sent):
    workflow = make_workflow(user, variables=[{"name": "at", "type": "STRING"}], steps=[
        {"name": "pause", "type": "DELAY", "config": {"until": "{{ input.at }}"}},
        {"name": "after", "type": "TRANSFORM", "config": {"template": "went on"}},
    ])
    run = execution_start(workflow=workflow, inputs={"at": "2020-01-01T00:00:00Z"}, started_by=user)
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.COMPLETED and run.output == "went on"
    assert _waiting_step(run).output == {"until": "2020-01-01T00:00:00+00:00"}


def test_a_bad_until_fails_the_step_with_a_message(user, sent):
    workflow = make_workflow(user, steps=[{"name": "pause", "type": "DELAY", "config": {"until": "next tuesday"}}])
    run = execution_start(workflow=workflow, inputs={}, started_by=user)
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.FAILED
    assert run.error["type"] == "ConfigError" and "ISO 8601" in run.error["message"]


def test_cancelling_a_waiting_run_ends_the_wait_and_a_later_timer_is_a_no_op(user, sent):
    run = execution_start(workflow=_delay_workflow(user), inputs={}, started_by=user)
    drive(sent)
    execution_cancel(execution=run, user=user)
    step = _waiting_step(run)
    assert step.status == StepExecutionStatus.CANCELLED
    _make_due(step)
    assert orchestration.wait_timer_fire(step_execution_id=step.pk) == "not-waiting"
    run.refresh_from_db()
    assert run.status == ExecutionStatus.CANCELLED
    assert not WorkflowStepExecution.objects.filter(execution=run, step_name="after").exists()


def test_the_workflow_timeout_counts_waiting_time(user, sent):
    run = execution_start(workflow=_delay_workflow(user, seconds=3600, timeout_seconds=60), inputs={},
                          started_by=user)
    drive(sent)
    WorkflowExecution.objects.filter(pk=run.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    assert reaper_sweep().timed_out == 1
    run.refresh_from_db()
    assert run.status == ExecutionStatus.FAILED and run.error["type"] == "Timeout"
    assert run.error["step"] == "pause"
    assert _waiting_step(run).status == StepExecutionStatus.CANCELLED


def test_the_reaper_resumes_a_due_wait_whose_timer_message_was_lost(user, sent, settings):
    run = execution_start(workflow=_delay_workflow(user), inputs={}, started_by=user)
    drive(sent)
    sent.clear()  # the countdown message is lost
    step = _waiting_step(run)
    _make_due(step, seconds_ago=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"] + 1)
    assert reaper_sweep().waits_resumed == 1
    assert reaper_sweep().waits_resumed == 0
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.COMPLETED


def test_a_wait_longer_than_a_countdown_gets_its_timer_from_the_reaper_when_near(user, sent, settings):
    run = execution_start(workflow=_delay_workflow(user, seconds=3600), inputs={}, started_by=user)
    drive(sent)
    assert sent == []  # an hour is longer than MAX_BACKOFF_SECONDS: no countdown message
    assert reaper_sweep().timers_sent == 0
    step = _waiting_step(run)
    # An hour later: two seconds to go.
    WorkflowStepExecution.objects.filter(pk=step.pk).update(available_at=timezone.now() + timedelta(seconds=2),
                                                            started_at=timezone.now() - timedelta(seconds=3598))
    assert reaper_sweep().timers_sent == 1
    assert sent[0][:2] == (task_names.RESUME_WAIT, [str(step.pk)]) and 0 < sent[0][2] <= 2


@pytest.mark.parametrize("counts_waiting", [False, True])
def test_waiting_runs_take_a_concurrency_slot_only_when_the_workflow_says_so(user, sent, counts_waiting):
    workflow = _delay_workflow(user, max_concurrent_executions=1, concurrency_counts_waiting=counts_waiting)
    first = execution_start(workflow=workflow, inputs={}, started_by=user)
    drive(sent)
    second = execution_start(workflow=workflow, inputs={}, started_by=user)
    drive(sent)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == ExecutionStatus.WAITING
    assert second.status == (ExecutionStatus.PENDING if counts_waiting else ExecutionStatus.WAITING)
    if counts_waiting:  # the slot frees when the first run ends
        _make_due(_waiting_step(first))
        orchestration.wait_timer_fire(step_execution_id=_waiting_step(first).pk)
        drive(sent)
        second.refresh_from_db()
        assert second.status == ExecutionStatus.WAITING


def test_the_execution_list_filters_waiting_runs(user, api, sent):
    waiting = execution_start(workflow=_delay_workflow(user), inputs={}, started_by=user)
    drive(sent)
    execution_start(workflow=make_workflow(user, steps=[{"name": "t", "type": "TRANSFORM",
                                                         "config": {"template": "x"}}]), inputs={}, started_by=user)
    drive(sent)
    response = api.get("/api/executions/?status=WAITING")
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(waiting.pk)]
    detail = api.get(f"/api/executions/{waiting.pk}/").json()
    assert detail["status"] == "WAITING"
    assert [s["status"] for s in detail["steps"]] == ["WAITING"]


def test_metrics_count_waiting_runs_and_steps(user, admin_user, client, sent):
    execution_start(workflow=_delay_workflow(user), inputs={}, started_by=user)
    drive(sent)
    client.force_login(admin_user)
    body = client.get("/metrics").content.decode()
    assert 'promptpilot_executions{status="WAITING",trigger_type="MANUAL"} 1.0' in body
    assert "promptpilot_executions_waiting 1.0" in body
    assert 'promptpilot_step_executions_active{status="WAITING"} 1.0' in body
