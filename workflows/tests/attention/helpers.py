"""Runs and deliveries for each needs-attention reason, failed by the engine's own
transitions where one exists (WorkerLost, Timeout), so the error payloads are real."""
from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from triggers.errors import TriggerRejected
from triggers.models import TriggerInvocation
from triggers.services.triggers import trigger_execute
from triggers.tests.helpers import create_trigger
from workflows.engine.retry import normalize_retry_config
from workflows.models import Workflow, WorkflowExecution, WorkflowStepExecution
from workflows.services.transitions import execution_time_out, step_lease_expire
from workflows.tests.run_pages.helpers import make_run


def _running(workflow) -> tuple[WorkflowExecution, WorkflowStepExecution]:
    run = make_run(workflow, status="RUNNING", steps=[{"name": "step_1"}, {"name": "step_2", "status": "RUNNING"}])
    return run, run.step_executions.get(step_name="step_2")


def worker_lost_run(workflow) -> WorkflowExecution:
    """The reaper's path: the step's lease expired once more than MAX_LOST_ATTEMPTS allows."""
    run, step = _running(workflow)
    step.lost_attempts = settings.PROMPTPILOT["MAX_LOST_ATTEMPTS"] - 1
    step.save()
    with transaction.atomic():
        failed = step_lease_expire(step_execution=WorkflowStepExecution.objects.select_for_update().get(pk=step.pk),
                                   now=timezone.now())
    assert failed
    run.refresh_from_db()
    return run


def timed_out_run(workflow) -> WorkflowExecution:
    run, step = _running(workflow)
    with transaction.atomic():
        execution_time_out(execution=WorkflowExecution.objects.select_for_update().get(pk=run.pk), running_step=step)
    run.refresh_from_db()
    return run


def failed_run(workflow, *, retry_count: int, max_retries: int) -> WorkflowExecution:
    error = {"type": "ProviderError", "message": "503 from the provider", "step": "step_2", "details": {}}
    return make_run(workflow, status="FAILED", error=error, steps=[
        {"name": "step_1"},
        {"name": "step_2", "status": "FAILED", "error": error, "retry_count": retry_count,
         "retry_config": normalize_retry_config({"max_retries": max_retries})},
    ])


def retries_exhausted_run(workflow, *, max_retries: int = 2) -> WorkflowExecution:
    return failed_run(workflow, retry_count=max_retries, max_retries=max_retries)


def plain_failed_run(workflow) -> WorkflowExecution:
    """Failed on its first try with no retry configured: the owner's error, not a dead letter."""
    return failed_run(workflow, retry_count=0, max_retries=0)


def rejected_invocation(workflow, *, name: str = "hook") -> TriggerInvocation:
    """A firing refused because the workflow is inactive: recorded REJECTED by the trigger service."""
    trigger = create_trigger(workflow, "MANUAL", name=name)[0]
    Workflow.objects.filter(pk=workflow.pk).update(is_active=False)
    trigger.refresh_from_db()
    try:
        trigger_execute(trigger=trigger, body={"input": {}}, actor=workflow.owner)
    except TriggerRejected as exc:
        invocation = exc.invocation
    else:
        raise AssertionError("an inactive workflow's trigger fired")
    Workflow.objects.filter(pk=workflow.pk).update(is_active=True)
    return invocation
