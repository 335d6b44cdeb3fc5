"""Runs with step rows written directly, so the pages can be tested without a worker."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow

ECHO = {"provider": "echo", "model": "echo"}


def echo_workflow(owner, *, name: str = "Summarise", steps: int = 2, **fields: Any):
    return make_workflow(
        owner, name=name,
        variables=[{"name": "topic", "type": "STRING", "required": False, "default": "tides"}],
        steps=[{"name": f"step_{i}", "type": "PROMPT",
                "config": {"template": f"Step {i} about {{{{ input.topic }}}}", "model": ECHO}}
               for i in range(1, steps + 1)],
        **fields,
    )


def make_run(workflow, *, status: str = "PENDING", steps: list[dict[str, Any]] | None = None,
             started_at: datetime | None = None, completed_at: datetime | None = None,
             **fields: Any) -> WorkflowExecution:
    """A run started by the service (nothing is sent: the test transaction never commits),
    then moved to ``status`` with the given step rows (``{name, status, seconds, ...}``,
    one after the other from ``started_at``)."""
    execution = execution_start(workflow=workflow, inputs={}, started_by=workflow.owner)
    now = timezone.now()
    start = started_at or (now - timedelta(seconds=60) if status != "PENDING" else None)
    cursor = start
    for order, spec in enumerate(steps or [], start=1):
        spec = dict(spec)
        seconds = spec.pop("seconds", 1)
        step_status = spec.pop("status", "COMPLETED")
        begun = cursor
        ended = begun + timedelta(seconds=seconds) if begun and step_status not in ("RUNNING", "PENDING") else None
        WorkflowStepExecution.objects.create(
            execution=execution, step_name=spec.pop("name", f"step_{order}"), step_order=order,
            step_type=spec.pop("type", "PROMPT"), status=step_status,
            started_at=begun if step_status != "PENDING" else None, completed_at=ended, **spec,
        )
        cursor = ended or cursor
    if status in ("COMPLETED", "FAILED", "CANCELLED") and completed_at is None:
        completed_at = cursor or now
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        status=status, started_at=start, completed_at=completed_at, **fields)
    execution.refresh_from_db()
    return execution


def text(response) -> str:
    return response.content.decode()


def flashes(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]
