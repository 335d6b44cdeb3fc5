"""Fixtures for the REST API tests: payload builders and objects made through the API."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from workflows.models import Prompt, Workflow, WorkflowExecution, WorkflowStepExecution
from workflows.services.definitions import workflow_current_version

VALID_WORKFLOW: dict[str, Any] = {
    "name": "Greeter",
    "description": "Says hello, then shouts it.",
    "variables": [
        {"name": "name", "type": "STRING", "required": True, "sample": "Ada"},
        {"name": "times", "type": "NUMBER", "required": False, "default": 1, "sample": 2},
    ],
    "steps": [
        {"name": "greet", "order": 1, "type": "TRANSFORM", "config": {"template": "Hello {{ input.name }}"}},
        {
            "name": "check",
            "order": 2,
            "type": "CONDITION",
            "config": {"expression": "input.times > 1", "if_true": "continue", "if_false": "skip_to:shout"},
        },
        {
            "name": "ask",
            "order": 3,
            "type": "PROMPT",
            "config": {"template": "Repeat: {{ steps.greet.output }}", "model": {"provider": "echo", "model": "echo"}},
        },
        {"name": "shout", "order": 4, "type": "TRANSFORM", "config": {"template": "{{ steps.greet.output | upper }}"}},
    ],
}


@pytest.fixture
def workflow_payload():
    """A fresh deep copy of a valid workflow body; pass overrides as keyword arguments."""

    def build(**overrides: Any) -> dict[str, Any]:
        body = copy.deepcopy(VALID_WORKFLOW)
        body.update(overrides)
        return body

    return build


@pytest.fixture
def create_workflow(api, workflow_payload):
    """Create a workflow through the API as ``user``; returns the response body."""

    def create(client=None, **overrides: Any) -> dict[str, Any]:
        response = (client or api).post("/api/workflows/", workflow_payload(**overrides), format="json")
        assert response.status_code == 201, response.json()
        return response.json()

    return create


@pytest.fixture
def workflow(create_workflow) -> Workflow:
    return Workflow.objects.get(pk=create_workflow()["id"])


@pytest.fixture
def other_workflow(other_api, create_workflow) -> Workflow:
    return Workflow.objects.get(pk=create_workflow(client=other_api, name="Not yours")["id"])


@pytest.fixture
def prompt(user) -> Prompt:
    return Prompt.objects.create(
        owner=user, name="Summarise", template="Summarise: {{ input.name }}",
        model_config={"provider": "echo", "model": "echo"},
    )


@pytest.fixture
def other_prompt(other_user) -> Prompt:
    return Prompt.objects.create(owner=other_user, name="Secret", template="Secret {{ input.name }}")


@pytest.fixture
def make_execution():
    """An execution row made with the ORM (no service, no worker), for read-side tests."""

    def make(workflow: Workflow, *, status: str = "COMPLETED", steps: list[tuple[str, int, str, str]] = (),
             **fields: Any) -> WorkflowExecution:
        execution = WorkflowExecution.objects.create(
            workflow=workflow, version=workflow_current_version(workflow=workflow), status=status,
            input={"name": "Ada"}, **fields,
        )
        for name, order, step_type, step_status in steps:
            WorkflowStepExecution.objects.create(
                execution=execution, step_name=name, step_order=order, step_type=step_type, status=step_status,
            )
        return execution

    return make


def definition_state(workflow: Workflow) -> tuple:
    """Everything a rejected write must leave untouched."""
    workflow.refresh_from_db()
    return (
        workflow.name,
        workflow.timeout_seconds,
        workflow.max_concurrent_executions,
        list(workflow.variables.order_by("id").values_list("name", "type", "required", "default")),
        list(workflow.steps.order_by("order").values_list("name", "order", "type", "config", "prompt_id")),
        list(workflow.versions.order_by("number").values_list("number", flat=True)),
    )
