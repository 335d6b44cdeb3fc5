"""Which definition a preview runs: the latest saved version (what a run started now would
pin), read with one small query and parsed once per process; never a stale one."""
from __future__ import annotations

import pytest

from workflows.models import Prompt, Workflow, WorkflowStep, WorkflowVersion
from workflows.services.preview import workflow_preview
from workflows.services.workflows import prompt_update, workflow_create, workflow_update

pytestmark = [pytest.mark.django_db, pytest.mark.single_pass]  # reaches no fast-statement branch

ECHO = {"provider": "echo", "model": "echo"}


def _flow(owner, template: str = "Hello {{ input.name }}") -> Workflow:
    return workflow_create(owner=owner, data={
        "name": "Greeter", "variables": [{"name": "name", "type": "STRING", "sample": "Ada"}],
        "steps": [{"name": "greet", "type": "PROMPT", "config": {"template": template, "model": ECHO}}],
    })


def test_each_saved_edit_is_previewed_at_once(user):
    workflow = _flow(user)
    assert workflow_preview(workflow=workflow, use_sample_data=True)["output"] == "Hello Ada"
    workflow_update(workflow=workflow, data={"steps": [
        {"name": "greet", "type": "PROMPT", "config": {"template": "Bye {{ input.name }}", "model": ECHO}}]})
    assert workflow_preview(workflow=workflow, use_sample_data=True)["output"] == "Bye Ada"
    fresh = Workflow.objects.get(pk=workflow.pk)  # as the next request loads it
    assert workflow_preview(workflow=fresh, use_sample_data=True)["output"] == "Bye Ada"


def test_a_saved_prompt_edit_is_previewed_at_once(user):
    prompt = Prompt.objects.create(owner=user, name="Greeting", template="Hi {{ input.name }}")
    workflow = _flow(user)
    workflow_update(workflow=workflow, data={"steps": [
        {"name": "greet", "type": "PROMPT", "prompt": prompt.pk, "config": {"model": ECHO}}]})
    assert workflow_preview(workflow=workflow, use_sample_data=True)["output"] == "Hi Ada"
    prompt_update(prompt=prompt, data={"template": "Howdy {{ input.name }}"})
    assert workflow_preview(workflow=workflow, use_sample_data=True)["output"] == "Howdy Ada"


def test_the_preview_reads_one_row_not_the_definition_tables(user, django_assert_num_queries):
    workflow = _flow(user)
    workflow_preview(workflow=workflow, use_sample_data=True)  # parses the version once per process
    with django_assert_num_queries(1):
        result = workflow_preview(workflow=workflow, use_sample_data=True)
    assert result["status"] == "COMPLETED"


def test_a_workflow_without_a_version_is_previewed_from_its_rows_and_gets_none(user):
    workflow = Workflow.objects.create(owner=user, name="Bare")
    WorkflowStep.objects.create(workflow=workflow, order=1, name="only", type="TRANSFORM",
                                config={"template": "plain"})
    assert workflow_preview(workflow=workflow)["output"] == "plain"
    assert not WorkflowVersion.objects.filter(workflow=workflow).exists(), "a preview writes nothing"
