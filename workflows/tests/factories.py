"""Build workflows directly with the ORM for tests that are not about the API."""
from __future__ import annotations

from typing import Any

from workflows.models import Workflow, WorkflowStep, WorkflowVariable
from workflows.services.definitions import workflow_version_create


def make_workflow(owner, *, steps: list[dict[str, Any]], variables: list[dict[str, Any]] | None = None,
                  name: str = "Test workflow", **fields: Any) -> Workflow:
    workflow = Workflow.objects.create(owner=owner, name=name, **fields)
    for variable in variables or []:
        WorkflowVariable.objects.create(workflow=workflow, **variable)
    for order, step in enumerate(steps, start=1):
        WorkflowStep.objects.create(workflow=workflow, order=step.pop("order", order), **step)
    workflow_version_create(workflow=workflow, note="created by test")
    return workflow


def probe_step(name: str, prompt: str, *, delay_ms: int = 0, provider: str = "probe", hold_until: Any = None,
               **extra: Any) -> dict:
    """A PROMPT step answered by the test probe provider (echo-like, records every call);
    ``hold_until``: a file path whose creation ends the call (``delay_ms`` at most)."""
    model = {"provider": provider, "model": "probe-1", "delay_ms": delay_ms}
    if hold_until is not None:
        model["hold_until"] = str(hold_until)
    return {"name": name, "type": "PROMPT", "config": {"template": prompt, "model": model}, **extra}
