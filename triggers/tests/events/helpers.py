"""Helpers of the EVENT trigger tests: source and target workflows, finished runs."""
from __future__ import annotations

from typing import Any

from django.utils import timezone

from triggers.tests.helpers import create_trigger
from workflows.models import WorkflowExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow

TARGET_TEMPLATE = "{{ trigger.type }} {{ trigger.payload.event }} of workflow {{ trigger.payload.workflow }}"


def source_workflow(owner, name: str = "Source"):
    """No variables, one TRANSFORM step: the run whose end emits the event."""
    return make_workflow(owner, name=name, steps=[{"name": "work", "type": "TRANSFORM", "config": {"template": "ok"}}])


def target_workflow(owner, name: str = "Target", variables: list[dict[str, Any]] | None = None):
    """Optional ``status`` (STRING) and ``output`` (JSON) variables, which platform payloads fill."""
    return make_workflow(
        owner, name=name,
        variables=variables if variables is not None else [
            {"name": "status", "type": "STRING", "required": False},
            {"name": "output", "type": "JSON", "required": False},
        ],
        steps=[{"name": "react", "type": "TRANSFORM", "config": {"template": TARGET_TEMPLATE}}],
    )


def event_trigger(workflow, event: str = "execution.completed", filter: dict | None = None, **config: Any):
    trigger, secret = create_trigger(workflow, "EVENT", name=f"on {event}",
                                     config={"event": event, "filter": filter or {}, **config})
    assert secret is None
    return trigger


def finished_run(workflow, status: str = "COMPLETED", *, output: Any = None, error: dict | None = None,
                 metadata: dict | None = None) -> WorkflowExecution:
    """A run of ``workflow`` that ended ``status`` (written directly: no worker involved)."""
    execution = execution_start(workflow=workflow, inputs={})
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        status=status, output=output, error=error, completed_at=timezone.now(),
        metadata={**execution.metadata, **(metadata or {})},
    )
    return WorkflowExecution.objects.select_related("workflow").get(pk=execution.pk)


def finish(execution: WorkflowExecution, status: str = "COMPLETED", output: Any = "ok") -> WorkflowExecution:
    WorkflowExecution.objects.filter(pk=execution.pk).update(status=status, output=output,
                                                             completed_at=timezone.now())
    return WorkflowExecution.objects.select_related("workflow").get(pk=execution.pk)
