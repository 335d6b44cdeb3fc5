"""POST /api/workflows/{id}/preview: the DESIGN §6 shape, nothing persisted."""
from __future__ import annotations

import threading

import pytest

from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services.preview import _detached

STEP_KEYS = {"name", "type", "status", "duration_ms", "input", "output", "error", "warnings", "token_estimate",
             "cost_estimate_usd", "dry_run"}


@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["preview", "preview/"])
def test_preview_answers_the_documented_shape(api, workflow, suffix):
    versions_before = workflow.versions.count()
    response = api.post(f"/api/workflows/{workflow.pk}/{suffix}", {"input": {"name": "Ada", "times": 2}}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"status", "steps", "warnings", "token_estimate", "cost_estimate_usd", "dry_run", "output",
                         "duration_ms"}
    assert body["status"] == "COMPLETED"
    assert set(body["token_estimate"]) == {"input", "output", "total", "estimated"}
    assert isinstance(body["duration_ms"], int)
    assert [s["name"] for s in body["steps"]] == ["greet", "check", "ask", "shout"]
    for step in body["steps"]:
        assert set(step) == STEP_KEYS
        assert set(step["token_estimate"]) >= {"input", "output", "total"}
    greet, check, ask, shout = body["steps"]
    assert greet["output"] == "Hello Ada"
    assert check["output"] is True
    assert ask["output"] == "Repeat: Hello Ada"
    assert ask["token_estimate"]["total"] > 0
    assert body["output"] == "HELLO ADA"
    assert body["token_estimate"]["total"] >= ask["token_estimate"]["total"]
    # Nothing persisted.
    assert WorkflowExecution.objects.count() == 0
    assert WorkflowStepExecution.objects.count() == 0
    assert workflow.versions.count() == versions_before


@pytest.mark.django_db
def test_preview_reports_skipped_steps(api, workflow):
    body = api.post(f"/api/workflows/{workflow.pk}/preview", {"input": {"name": "Ada", "times": 1}}, format="json").json()
    statuses = {s["name"]: s["status"] for s in body["steps"]}
    assert statuses["check"] == "COMPLETED"
    assert statuses["ask"] == "SKIPPED"
    assert statuses["shout"] == "COMPLETED"


@pytest.mark.django_db
def test_preview_with_sample_data(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/preview", {"use_sample_data": True}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["steps"][0]["output"] == "Hello Ada"
    assert response.json()["status"] == "COMPLETED"


@pytest.mark.django_db
def test_preview_input_overrides_sample_data(api, workflow):
    body = api.post(f"/api/workflows/{workflow.pk}/preview",
                    {"use_sample_data": True, "input": {"name": "Grace"}}, format="json").json()
    assert body["steps"][0]["output"] == "Hello Grace"


@pytest.mark.django_db
def test_preview_with_invalid_input_is_400_naming_variables(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/preview", {"input": {"times": "x"}}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"
    assert set(response.json()["extra"]["errors"]) == {"name", "times"}


@pytest.mark.django_db
def test_preview_of_a_failing_step_is_200_with_failed_status(api, create_workflow):
    created = create_workflow(steps=[{"name": "bad", "type": "TRANSFORM", "config": {"template": "{{ input.name.nope }}"}}])
    response = api.post(f"/api/workflows/{created['id']}/preview", {"input": {"name": "Ada"}}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "FAILED"
    assert body["steps"][0]["status"] == "FAILED"
    assert body["steps"][0]["error"]["type"] == "TemplateError"


@pytest.mark.django_db
def test_preview_of_inactive_workflow_is_allowed(api, workflow):
    api.patch(f"/api/workflows/{workflow.pk}/", {"is_active": False}, format="json")
    response = api.post(f"/api/workflows/{workflow.pk}/preview", {"use_sample_data": True}, format="json")
    assert response.status_code == 200


def test_values_that_cannot_be_copied_come_back_with_a_warning():
    warnings: list[str] = []
    lock = threading.Lock()
    value = _detached({"lock": lock}, "Step \"x\" output", warnings)
    assert isinstance(value["lock"], str)
    assert any("could not be copied" in w for w in warnings)


def test_copied_values_are_detached_from_the_original():
    original = {"a": [1, 2]}
    warnings: list[str] = []
    copied = _detached(original, "output", warnings)
    copied["a"].append(3)
    assert original == {"a": [1, 2]}
    assert warnings == []


def test_values_that_are_not_plain_json_come_back_in_their_json_form_with_a_warning():
    warnings: list[str] = []
    nested = {"deep": [{"ok": 1.5, "text": "x"}]}
    value = _detached({"nan": float("nan"), "pair": (1, 2), "keys": {1: "one"}, "nested": nested}, "output", warnings)
    assert value == {"nan": "nan", "pair": [1, 2], "keys": {"1": "one"}, "nested": nested}
    assert value["nested"] is not nested and value["nested"]["deep"][0] is not nested["deep"][0]
    assert any("not plain JSON" in w for w in warnings)


def test_circular_values_never_crash():
    loop: list = []
    loop.append(loop)
    warnings: list[str] = []
    value = _detached(loop, "output", warnings)
    assert isinstance(value, list)
    assert warnings
