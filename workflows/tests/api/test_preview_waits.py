"""Previews of workflows that wait (DESIGN §8): approvals answered by ``approvals``
(approved with a warning by default), delays skipped with a warning, nothing persisted.
Also: saving such workflows through the API (the save-time checks know the new types)."""
from __future__ import annotations

import pytest

from workflows.models import WorkflowExecution, WorkflowStepExecution

pytestmark = pytest.mark.django_db

STEPS = [
    {"name": "pause", "order": 1, "type": "DELAY", "config": {"seconds": 86400}},
    {"name": "review", "order": 2, "type": "APPROVAL",
     "config": {"message": "Send {{ input.name }}?", "timeout_seconds": 3600, "on_timeout": "reject"}},
    {"name": "gate", "order": 3, "type": "CONDITION",
     "config": {"expression": "steps.review.output.approved", "if_false": "stop"}},
    {"name": "send", "order": 4, "type": "TRANSFORM", "config": {"template": "sent to {{ input.name }}"}},
]


def _workflow(create_workflow):
    return create_workflow(steps=STEPS)["id"]


def test_a_preview_skips_the_delay_and_approves_by_default_with_warnings(api, create_workflow):
    workflow_id = _workflow(create_workflow)
    response = api.post(f"/api/workflows/{workflow_id}/preview", {"use_sample_data": True}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "COMPLETED" and body["output"] == "sent to Ada"
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["pause"]["status"] == "COMPLETED" and "skipped" in steps["pause"]["warnings"][0]
    assert steps["review"]["output"]["approved"] is True and steps["review"]["output"]["decided_by"] == "preview"
    assert "approved by default" in steps["review"]["warnings"][0]
    assert WorkflowExecution.objects.count() == 0 and WorkflowStepExecution.objects.count() == 0


def test_approvals_answer_each_approval(api, create_workflow):
    workflow_id = _workflow(create_workflow)
    body = api.post(f"/api/workflows/{workflow_id}/preview",
                    {"use_sample_data": True, "approvals": {"review": False}}, format="json").json()
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["review"]["output"]["approved"] is False and steps["review"]["warnings"] == []
    assert steps["send"]["status"] == "SKIPPED"


def test_approvals_naming_no_approval_step_is_400(api, create_workflow):
    workflow_id = _workflow(create_workflow)
    response = api.post(f"/api/workflows/{workflow_id}/preview", {"approvals": {"send": True}}, format="json")
    assert response.status_code == 400
    assert "APPROVAL steps: review" in response.json()["message"]
    response = api.post(f"/api/workflows/{workflow_id}/preview", {"approvals": {"review": "yes"}}, format="json")
    assert response.status_code == 400


def test_saving_bad_waiting_steps_names_each_problem(api, workflow_payload):
    steps = [{"name": "pause", "order": 1, "type": "DELAY", "config": {"seconds": 5, "until": "2030-01-01"}},
             {"name": "review", "order": 2, "type": "APPROVAL", "config": {"message": "{{ input.nope }}",
                                                                          "on_timeout": "shrug"}}]
    response = api.post("/api/workflows/", workflow_payload(steps=steps), format="json")
    assert response.status_code == 400
    errors = response.json()["extra"]["errors"]
    assert set(errors) >= {"steps[0].config", "steps[1].config.on_timeout", "steps[1].config.message"}


def test_a_preview_runs_a_child_workflow_in_process(api, create_workflow):
    child_id = create_workflow(name="Child", variables=[{"name": "name", "type": "STRING", "required": True}],
                               steps=[{"name": "hello", "order": 1, "type": "TRANSFORM",
                                       "config": {"template": "hello {{ input.name }}"}}])["id"]
    parent_id = create_workflow(name="Parent", steps=[
        {"name": "call", "order": 1, "type": "WORKFLOW", "config": {"workflow": child_id,
                                                                   "input": {"name": "{{ input.name }}"}}},
        {"name": "shout", "order": 2, "type": "TRANSFORM", "config": {"template": "{{ steps.call.output|upper }}"}},
    ])["id"]
    body = api.post(f"/api/workflows/{parent_id}/preview", {"input": {"name": "Ada"}}, format="json").json()
    assert body["status"] == "COMPLETED" and body["output"] == "HELLO ADA"
    assert WorkflowExecution.objects.count() == 0


def test_saving_a_workflow_step_naming_another_users_workflow_is_400(api, other_api, create_workflow):
    theirs = create_workflow(client=other_api, name="Theirs")["id"]
    response = api.post("/api/workflows/", {"name": "Mine", "steps": [
        {"name": "call", "order": 1, "type": "WORKFLOW", "config": {"workflow": theirs}}]}, format="json")
    assert response.status_code == 400
    assert "steps[0].config.workflow" in response.json()["extra"]["errors"]
