"""Which definition a preview runs: the latest saved version (what a run started now would
pin), named by the workflow's row (its ``latest_version`` pointer) and parsed once per
process; never a stale one."""
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


def test_a_saved_prompt_edit_is_previewed_at_once(user, api):
    prompt = Prompt.objects.create(owner=user, name="Greeting", template="Hi {{ input.name }}")
    workflow = _flow(user)
    workflow_update(workflow=workflow, data={"steps": [
        {"name": "greet", "type": "PROMPT", "prompt": prompt.pk, "config": {"model": ECHO}}]})
    assert workflow_preview(workflow=workflow, use_sample_data=True)["output"] == "Hi Ada"
    prompt_update(prompt=prompt, data={"template": "Howdy {{ input.name }}"})  # re-versions its workflows
    fresh = Workflow.objects.get(pk=workflow.pk)  # as the next request loads it
    assert workflow_preview(workflow=fresh, use_sample_data=True)["output"] == "Howdy Ada"
    assert api.patch(f"/api/prompts/{prompt.pk}/", {"template": "Hey {{ input.name }}"},
                     format="json").status_code == 200
    answer = api.post(f"/api/workflows/{workflow.pk}/preview", {"use_sample_data": True}, format="json")
    assert answer.status_code == 200 and answer.json()["output"] == "Hey Ada"


def test_the_pointer_names_the_newest_version_after_every_kind_of_save(user, api):
    workflow = _flow(user)
    newest = WorkflowVersion.objects.filter(workflow=workflow).order_by("-number")
    assert Workflow.objects.get(pk=workflow.pk).latest_version_id == newest.first().pk
    stale = Workflow.objects.get(pk=workflow.pk)
    workflow_update(workflow=workflow, data={"steps": [
        {"name": "greet", "type": "TRANSFORM", "config": {"template": "v2"}}]})
    assert Workflow.objects.get(pk=workflow.pk).latest_version.number == 2
    stale.is_active = False
    stale.save()  # an instance read before v2, saved for another change, leaves the pointer alone
    assert Workflow.objects.get(pk=workflow.pk).latest_version.number == 2
    assert api.post(f"/api/workflows/{workflow.pk}/versions/1/restore").status_code in (200, 201)
    restored = Workflow.objects.get(pk=workflow.pk)
    assert restored.latest_version_id == newest.first().pk and restored.latest_version.number == 3
    assert workflow_preview(workflow=restored, use_sample_data=True)["output"] == "Hello Ada"


def test_the_preview_asks_the_database_nothing_beyond_the_workflow_row(user, django_assert_num_queries):
    workflow = _flow(user)
    workflow_preview(workflow=workflow, use_sample_data=True)  # parses the version once per process
    loaded = Workflow.objects.get(pk=workflow.pk)  # the API's one query (ownership, 404)
    with django_assert_num_queries(0):
        result = workflow_preview(workflow=loaded, use_sample_data=True)
    assert result["status"] == "COMPLETED"


def test_a_workflow_without_a_version_is_previewed_from_its_rows_and_gets_none(user):
    workflow = Workflow.objects.create(owner=user, name="Bare")
    WorkflowStep.objects.create(workflow=workflow, order=1, name="only", type="TRANSFORM",
                                config={"template": "plain"})
    assert workflow_preview(workflow=workflow)["output"] == "plain"
    assert not WorkflowVersion.objects.filter(workflow=workflow).exists(), "a preview writes nothing"


def test_a_child_workflow_is_previewed_at_its_latest_saved_version(user):
    child = workflow_create(owner=user, data={"name": "Child", "steps": [
        {"name": "hello", "type": "TRANSFORM", "config": {"template": "hello"}}]})
    parent = workflow_create(owner=user, data={"name": "Parent", "steps": [
        {"name": "call", "type": "WORKFLOW", "config": {"workflow": child.pk}}]})
    assert workflow_preview(workflow=parent)["output"] == "hello"
    workflow_update(workflow=Workflow.objects.get(pk=child.pk), data={"steps": [
        {"name": "hello", "type": "TRANSFORM", "config": {"template": "hello again"}}]})
    assert workflow_preview(workflow=parent)["output"] == "hello again"
