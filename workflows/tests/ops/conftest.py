"""Data for the ops tests: a workflow with runs in every state, built with the ORM."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from triggers.models import TriggerInvocation, TriggerKind, WorkflowTrigger
from workflows.models import (
    ExecutionStatus,
    HttpCredential,
    Prompt,
    StepExecutionStatus,
    StepType,
    TriggerType,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVariable,
    WorkflowVersion,
)
from workflows.services.definitions import workflow_version_create


@dataclass
class OpsWorld:
    owner: object
    prompt: Prompt
    workflow: Workflow
    other_workflow: Workflow
    version: WorkflowVersion
    completed: WorkflowExecution
    failed: WorkflowExecution
    running: WorkflowExecution
    scheduled: WorkflowExecution
    trigger: WorkflowTrigger
    invocation: TriggerInvocation


def make_ops_workflow(owner, name: str, prompt: Prompt | None = None) -> Workflow:
    workflow = Workflow.objects.create(owner=owner, name=name, description="ops fixture")
    WorkflowVariable.objects.create(workflow=workflow, name="topic", type="STRING", required=True, sample="durable")
    WorkflowStep.objects.create(
        workflow=workflow, name="draft", order=1, type=StepType.PROMPT, prompt=prompt,
        config={"template": "About {{ input.topic }}", "model": {"provider": "echo", "model": "echo"}},
    )
    WorkflowStep.objects.create(
        workflow=workflow, name="shape", order=2, type=StepType.TRANSFORM,
        config={"template": "Result: {{ steps.draft.output }}"},
    )
    workflow_version_create(workflow=workflow, note="ops fixture")
    return workflow


def make_execution(workflow: Workflow, status: str, **fields) -> WorkflowExecution:
    now = timezone.now()
    defaults = {"input": {"topic": "durable"}, "trigger_type": TriggerType.MANUAL}
    if status in ExecutionStatus.finished():
        defaults.update(started_at=now - timedelta(seconds=2), completed_at=now)
    elif status == ExecutionStatus.RUNNING:
        defaults.update(started_at=now)
    defaults.update(fields)
    return WorkflowExecution.objects.create(
        workflow=workflow, version=workflow.latest_version, status=status, **defaults
    )


def add_step_runs(execution: WorkflowExecution, rows: list[tuple[str, str, str, dict]]) -> None:
    now = timezone.now()
    for order, (name, step_type, status, data) in enumerate(rows, start=1):
        WorkflowStepExecution.objects.create(
            execution=execution, step_name=name, step_order=order, step_type=step_type, status=status,
            started_at=now - timedelta(milliseconds=300), completed_at=now, **data,
        )


@pytest.fixture
def ops_world(django_user_model) -> OpsWorld:
    owner = django_user_model.objects.create_user(username="builder-ops", password="pw-builder-ops")
    prompt = Prompt.objects.create(
        owner=owner, name="Ops prompt", template="About {{ input.topic }}",
        model_config={"provider": "echo", "model": "echo"},
    )
    workflow = make_ops_workflow(owner, "Ops flow", prompt)
    other = make_ops_workflow(owner, "Other flow")

    completed = make_execution(
        workflow, ExecutionStatus.COMPLETED, output="Result: About durable <b>ünïcode</b>",
        aggregate_tokens={"input": 3, "output": 3, "total": 6}, metadata={"trigger": {"type": "MANUAL"}},
    )
    add_step_runs(completed, [
        ("draft", StepType.PROMPT, StepExecutionStatus.COMPLETED,
         {"input": {"prompt": "About durable"}, "output": "About durable",
          "model_outputs": [{"provider": "echo", "model": "echo", "status": "ok", "content": "About durable"}]}),
        ("shape", StepType.TRANSFORM, StepExecutionStatus.COMPLETED,
         {"input": {"template": "Result: ..."}, "output": "Result: About durable <b>ünïcode</b>"}),
    ])
    failed = make_execution(
        workflow, ExecutionStatus.FAILED,
        error={"type": "TemplateError", "message": "'steps' has no attribute 'missing_step'", "step": "shape",
               "details": {}},
    )
    add_step_runs(failed, [
        ("draft", StepType.PROMPT, StepExecutionStatus.COMPLETED, {"output": "About durable"}),
        ("shape", StepType.TRANSFORM, StepExecutionStatus.FAILED,
         {"error": {"type": "TemplateError", "message": "'steps' has no attribute 'missing_step'"}}),
    ])
    running = make_execution(other, ExecutionStatus.RUNNING)
    trigger = WorkflowTrigger.objects.create(
        workflow=workflow, type=TriggerKind.SCHEDULED, name="Nightly",
        config={"cron": "0 3 * * *", "timezone": "UTC", "input": {"topic": "nightly"},
                "secret_hash": "sha256$do-not-show-me"},
    )
    scheduled = make_execution(
        workflow, ExecutionStatus.COMPLETED, trigger=trigger, trigger_type=TriggerType.SCHEDULED, output="ok"
    )
    invocation = TriggerInvocation.objects.create(
        trigger=trigger, verified=True, delivery_id="nightly-1", payload={"scheduled_for": "03:00"},
        execution=scheduled,
    )
    credential = HttpCredential(name="crm-api", hosts="api.example.com", description="ops fixture")
    credential.set_headers({"Authorization": "Bearer do-not-show-me"})
    credential.save()
    return OpsWorld(
        owner=owner, prompt=prompt, workflow=workflow, other_workflow=other, version=workflow.latest_version,
        completed=completed, failed=failed, running=running, scheduled=scheduled, trigger=trigger,
        invocation=invocation,
    )
