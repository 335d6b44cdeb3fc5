"""WORKFLOW steps: a child run started through execution_start (trigger_type WORKFLOW,
parent_execution set) while the parent waits holding no worker; the child's output is
the step's, its failure fails the step (on_error applies); cancel goes down; depth and
owner are checked at save and at run; the reaper resumes a parent whose resume was lost."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from workflows.errors import DefinitionInvalid
from workflows.models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStep
from workflows.services.definitions import workflow_version_create
from workflows.services.executions import execution_cancel, execution_start
from workflows.services.reaper import reaper_sweep
from workflows.services.workflows import workflow_update
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch, settings):
    return capture_broker(monkeypatch, settings)


def _child(owner, template="child says {{ input.n * 2 }}", **extra):
    return make_workflow(owner, name="Child", variables=[{"name": "n", "type": "NUMBER"}],
                         steps=[{"name": "work", "type": "TRANSFORM", "config": {"template": template}}], **extra)


def _parent(owner, child_id, on_error="fail", wait=True):
    return make_workflow(owner, name="Parent", steps=[
        {"name": "call", "type": "WORKFLOW", "on_error": on_error,
         "config": {"workflow": child_id, "input": {"n": "{{ 21 }}"}, "wait": wait, "default_output": "fallback"}},
        {"name": "after", "type": "TRANSFORM", "config": {"template": "parent got: {{ steps.call.output }}"}},
    ])


def _only_child(parent) -> WorkflowExecution:
    return WorkflowExecution.objects.get(parent_execution=parent)


def test_the_parent_waits_for_its_child_and_takes_its_output(user, sent):
    parent = execution_start(workflow=_parent(user, _child(user).pk), inputs={}, started_by=user)
    drive(sent)
    parent.refresh_from_db()
    child = _only_child(parent)
    assert child.trigger_type == "WORKFLOW" and child.input == {"n": 21}
    assert child.status == ExecutionStatus.COMPLETED and child.output == "child says 42"
    assert parent.status == ExecutionStatus.COMPLETED and parent.output == "parent got: child says 42"
    call = parent.step_executions.get(step_name="call")
    assert call.status == StepExecutionStatus.COMPLETED and call.attempt == 2
    assert call.input == {"workflow": child.workflow_id, "input": {"n": 21}}


def test_while_the_child_runs_the_parent_is_waiting_with_no_step_in_flight(user, sent):
    parent = execution_start(workflow=_parent(user, _child(user).pk), inputs={}, started_by=user)
    while True:  # deliver until the child's run is the only work left
        drive_one = [m for m in sent if m[0] == "workflows.advance_execution"]
        if not drive_one or WorkflowExecution.objects.filter(parent_execution=parent).exists():
            break
        sent.remove(drive_one[0])
        from workflows.services import orchestration

        orchestration.execution_admit(execution_id=drive_one[0][1][0])
        drive([m for m in sent if m[0] == "workflows.run_step"])
    parent.refresh_from_db()
    assert parent.status == ExecutionStatus.WAITING
    call = parent.step_executions.get(step_name="call")
    assert call.status == StepExecutionStatus.WAITING and call.lease_expires_at is None
    assert call.output["execution"] == str(_only_child(parent).pk)


def test_a_failed_child_fails_the_step_and_on_error_continue_goes_on(user, sent):
    broken = _child(user, template="{{ input.missing }}")
    parent = execution_start(workflow=_parent(user, broken.pk), inputs={}, started_by=user)
    drive(sent)
    parent.refresh_from_db()
    assert parent.status == ExecutionStatus.FAILED
    assert parent.error["type"] == "ChildFailed" and parent.error["step"] == "call"
    tolerant = execution_start(workflow=_parent(user, broken.pk, on_error="continue"), inputs={}, started_by=user)
    drive(sent)
    tolerant.refresh_from_db()
    assert tolerant.status == ExecutionStatus.COMPLETED and tolerant.output == "parent got: fallback"


def test_wait_false_starts_the_child_and_goes_on_at_once(user, sent):
    parent = execution_start(workflow=_parent(user, _child(user).pk, wait=False), inputs={}, started_by=user)
    drive(sent)
    parent.refresh_from_db()
    child = _only_child(parent)
    assert parent.status == ExecutionStatus.COMPLETED
    assert parent.step_executions.get(step_name="call").output == {"workflow": child.workflow_id,
                                                                   "execution": str(child.pk)}
    assert child.status == ExecutionStatus.COMPLETED


def test_cancelling_a_waiting_parent_cancels_its_child(user, sent):
    slow_child = make_workflow(user, name="Slow child", variables=[{"name": "n", "type": "NUMBER"}], steps=[
        {"name": "hold", "type": "DELAY", "config": {"seconds": 3600}}])
    parent = execution_start(workflow=_parent(user, slow_child.pk), inputs={}, started_by=user)
    drive(sent)
    child = _only_child(parent)
    assert child.status == ExecutionStatus.WAITING
    execution_cancel(execution=parent, user=user)
    child.refresh_from_db()
    parent.refresh_from_db()
    assert parent.status == ExecutionStatus.CANCELLED and child.status == ExecutionStatus.CANCELLED


def test_another_owners_workflow_is_refused_at_save_and_at_run(user, other_user, sent):
    theirs = _child(other_user)
    mine = _parent(user, _child(user).pk)
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_update(workflow=mine, user=user, data={"steps": [
            {"name": "call", "type": "WORKFLOW", "config": {"workflow": theirs.pk}}]})
    assert "steps[0].config.workflow" in refused.value.extra["errors"]
    # A definition written around the save check (e.g. by hand) still cannot reach it.
    WorkflowStep.objects.filter(workflow=mine, name="call").update(config={"workflow": theirs.pk})
    workflow_version_create(workflow=mine, note="by hand")
    run = execution_start(workflow=mine, inputs={}, started_by=user)
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.FAILED and "not one of the owner's workflows" in run.error["message"]
    assert not WorkflowExecution.objects.filter(workflow=theirs).exists()


def test_a_workflow_that_starts_itself_stops_at_the_depth_limit(user, sent, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "WORKFLOW_MAX_DEPTH": 3}
    loop = make_workflow(user, name="Loop", steps=[{"name": "again", "type": "TRANSFORM", "config": {"template": "x"}}])
    WorkflowStep.objects.filter(workflow=loop).update(type="WORKFLOW", config={"workflow": loop.pk})
    workflow_version_create(workflow=loop, note="calls itself")
    top = execution_start(workflow=loop, inputs={}, started_by=user)
    drive(sent)
    top.refresh_from_db()
    assert WorkflowExecution.objects.filter(workflow=loop).count() == 4  # top + 3 levels
    assert top.status == ExecutionStatus.FAILED and top.error["type"] == "ChildFailed"
    deepest = WorkflowExecution.objects.filter(workflow=loop).order_by("-created_at").first()
    assert "PROMPTPILOT_WORKFLOW_MAX_DEPTH is 3" in deepest.error["message"]


def test_the_reaper_resumes_a_parent_whose_child_ended_without_resuming_it(user, sent, settings, monkeypatch):
    from workflows.services import transitions

    monkeypatch.setattr(transitions, "_resume_parent", lambda execution_id: None)  # the resume is lost
    parent = execution_start(workflow=_parent(user, _child(user).pk), inputs={}, started_by=user)
    drive(sent)
    parent.refresh_from_db()
    assert parent.status == ExecutionStatus.WAITING and _only_child(parent).status == ExecutionStatus.COMPLETED
    WorkflowExecution.objects.filter(pk=_only_child(parent).pk).update(
        completed_at=timezone.now() - timedelta(seconds=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"] + 1))
    assert reaper_sweep().parents_resumed == 1
    drive(sent)
    parent.refresh_from_db()
    assert parent.status == ExecutionStatus.COMPLETED and parent.output == "parent got: child says 42"


def test_the_execution_pages_and_the_api_link_parent_and_child(user, sent, client, api):
    parent = execution_start(workflow=_parent(user, _child(user).pk), inputs={}, started_by=user)
    drive(sent)
    child = _only_child(parent)
    client.force_login(user)
    parent_page = client.get(f"/executions/{parent.pk}/").content.decode()
    assert f"/executions/{child.pk}/" in parent_page and 'data-testid="children"' in parent_page
    child_page = client.get(f"/executions/{child.pk}/").content.decode()
    assert f"/executions/{parent.pk}/" in child_page and "its step call" in child_page
    body = api.get(f"/api/executions/{child.pk}/").json()
    assert body["parent_execution"] == str(parent.pk) and body["trigger_type"] == "WORKFLOW"
