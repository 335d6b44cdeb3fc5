"""Execute, list, detail, cancel and retry of executions."""
from __future__ import annotations

import uuid

import pytest

from workflows.models import Workflow, WorkflowExecution

EXECUTION_FIELDS = {
    "id", "workflow", "version", "trigger", "trigger_type", "status", "input", "output", "error", "metadata",
    "aggregate_tokens", "warnings", "idempotency_key", "created_at", "started_at", "completed_at", "duration_ms",
    "retry_of",
}
STEP_FIELDS = {
    "name", "order", "type", "status", "input", "output", "outputs", "error", "retry_count", "retry_config",
    "model_outputs", "tokens", "warnings", "attempt", "started_at", "completed_at", "duration_ms",
}


# --- execute ---------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("suffix", ["execute", "execute/"])
def test_execute_answers_202_with_a_pending_execution(api, workflow, suffix):
    response = api.post(f"/api/workflows/{workflow.pk}/{suffix}", {"input": {"name": "Ada"}}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert EXECUTION_FIELDS <= set(body)
    assert body["status"] == "PENDING"
    assert body["trigger_type"] == "MANUAL"
    assert body["workflow"] == workflow.pk
    assert body["version"] == 1
    assert body["input"] == {"name": "Ada", "times": 1}
    assert response["Location"] == f"/api/executions/{body['id']}/"
    execution = WorkflowExecution.objects.get(pk=body["id"])
    assert execution.started_by.username == "builder"


@pytest.mark.django_db
def test_execute_without_input_uses_an_empty_input(api, create_workflow):
    created = create_workflow(variables=[{"name": "name", "required": False, "default": "world"}],
                              steps=[{"name": "a", "type": "TRANSFORM", "config": {"template": "{{ input.name }}"}}])
    response = api.post(f"/api/workflows/{created['id']}/execute")
    assert response.status_code == 202, response.json()
    assert response.json()["input"] == {"name": "world"}


@pytest.mark.django_db
def test_execute_with_invalid_input_names_every_variable_and_creates_nothing(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {"times": "many"}}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_input"
    assert set(body["extra"]["errors"]) == {"name", "times"}
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"input": "Ada"}, {"input": [1]}, {"input": 3}])
def test_execute_with_input_that_is_not_an_object_is_400(api, workflow, body):
    response = api.post(f"/api/workflows/{workflow.pk}/execute", body, format="json")
    assert response.status_code == 400
    assert "input" in response.json()["extra"]["errors"]
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_execute_with_non_json_body_is_400(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/execute", "{oops", content_type="application/json")
    assert response.status_code == 400
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_execute_inactive_workflow_is_409(api, workflow):
    Workflow.objects.filter(pk=workflow.pk).update(is_active=False)
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {"name": "Ada"}}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "workflow_inactive"
    assert WorkflowExecution.objects.count() == 0


@pytest.mark.django_db
def test_idempotency_key_replays_the_first_execution(api, workflow):
    url = f"/api/workflows/{workflow.pk}/execute"
    first = api.post(url, {"input": {"name": "Ada"}}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == 202
    again = api.post(url, {"input": {"name": "Bob"}}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["idempotency_key"] == "order-42"
    other = api.post(url, {"input": {"name": "Ada"}}, format="json", HTTP_IDEMPOTENCY_KEY="order-43")
    assert other.status_code == 202
    assert WorkflowExecution.objects.count() == 2


@pytest.mark.django_db
def test_too_long_idempotency_key_is_400(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {"name": "Ada"}}, format="json",
                        HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["message"]
    assert WorkflowExecution.objects.count() == 0


# --- list ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_list_shows_only_own_executions_newest_first(api, workflow, other_workflow, make_execution):
    older = make_execution(workflow, status="COMPLETED")
    newer = make_execution(workflow, status="FAILED")
    make_execution(other_workflow, status="COMPLETED")
    for path in ("/api/executions/", "/api/executions"):
        body = api.get(path).json()
        assert body["count"] == 2
        assert [e["id"] for e in body["results"]] == [str(newer.pk), str(older.pk)]
        assert EXECUTION_FIELDS <= set(body["results"][0])
        assert "steps" not in body["results"][0]


@pytest.mark.django_db
def test_list_filters_by_workflow_and_status(api, workflow, create_workflow, make_execution):
    second = Workflow.objects.get(pk=create_workflow(name="Second")["id"])
    done = make_execution(workflow, status="COMPLETED")
    failed = make_execution(workflow, status="FAILED")
    elsewhere = make_execution(second, status="FAILED")

    def ids(query: str) -> set[str]:
        response = api.get(f"/api/executions/?{query}")
        assert response.status_code == 200, response.json()
        return {e["id"] for e in response.json()["results"]}

    assert ids(f"workflow={workflow.pk}") == {str(done.pk), str(failed.pk)}
    assert ids("status=FAILED") == {str(failed.pk), str(elsewhere.pk)}
    assert ids(f"workflow={second.pk}&status=FAILED") == {str(elsewhere.pk)}
    assert ids("status=completed") == {str(done.pk)}
    assert ids("status=COMPLETED,FAILED") == {str(done.pk), str(failed.pk), str(elsewhere.pk)}


@pytest.mark.django_db
def test_filtering_by_another_users_workflow_shows_nothing(api, other_workflow, make_execution):
    make_execution(other_workflow)
    body = api.get(f"/api/executions/?workflow={other_workflow.pk}").json()
    assert body["count"] == 0


@pytest.mark.django_db
def test_invalid_status_filter_is_400_naming_allowed_values(api):
    response = api.get("/api/executions/?status=DONE")
    assert response.status_code == 400
    message = response.json()["message"]
    for value in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"):
        assert value in message


@pytest.mark.django_db
def test_malformed_workflow_filter_is_400(api):
    response = api.get("/api/executions/?workflow=abc")
    assert response.status_code == 400
    assert "workflow" in response.json()["extra"]["errors"]


@pytest.mark.django_db
def test_list_is_paginated(api, workflow, make_execution):
    for _ in range(5):
        make_execution(workflow)
    first = api.get("/api/executions/?page_size=2").json()
    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert first["next"] and first["previous"] is None
    last = api.get("/api/executions/?page_size=2&page=3").json()
    assert len(last["results"]) == 1
    seen = {e["id"] for page in (1, 2, 3) for e in api.get(f"/api/executions/?page_size=2&page={page}").json()["results"]}
    assert len(seen) == 5
    assert api.get("/api/executions/?page=99").status_code == 404


# --- detail ----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_detail_nests_steps_in_order(api, workflow, make_execution):
    execution = make_execution(
        workflow, status="COMPLETED",
        steps=[("shout", 4, "TRANSFORM", "COMPLETED"), ("greet", 1, "TRANSFORM", "COMPLETED"),
               ("check", 2, "CONDITION", "COMPLETED"), ("ask", 3, "PROMPT", "SKIPPED")],
    )
    for path in (f"/api/executions/{execution.pk}/", f"/api/executions/{execution.pk}"):
        response = api.get(path)
        assert response.status_code == 200
        body = response.json()
        assert EXECUTION_FIELDS <= set(body)
        assert [(s["name"], s["order"], s["type"], s["status"]) for s in body["steps"]] == [
            ("greet", 1, "TRANSFORM", "COMPLETED"), ("check", 2, "CONDITION", "COMPLETED"),
            ("ask", 3, "PROMPT", "SKIPPED"), ("shout", 4, "TRANSFORM", "COMPLETED"),
        ]
        assert STEP_FIELDS <= set(body["steps"][0])


@pytest.mark.django_db
@pytest.mark.parametrize("bad_id", ["abc", "123", "not-a-uuid-at-all", "%00", "f" * 5000])
def test_malformed_execution_id_is_404(api, bad_id):
    for method, suffix in (("get", "/"), ("post", "/cancel"), ("post", "/retry")):
        response = getattr(api, method)(f"/api/executions/{bad_id}{suffix}")
        assert response.status_code == 404, (suffix, response.status_code)


@pytest.mark.django_db
def test_unknown_execution_id_is_404(api):
    assert api.get(f"/api/executions/{uuid.uuid4()}/").status_code == 404


@pytest.mark.django_db
def test_other_users_execution_is_404_for_every_verb(api, other_workflow, make_execution):
    execution = make_execution(other_workflow, status="RUNNING")
    for method, suffix in (("get", "/"), ("post", "/cancel"), ("post", "/retry")):
        response = getattr(api, method)(f"/api/executions/{execution.pk}{suffix}")
        assert response.status_code == 404
    execution.refresh_from_db()
    assert execution.status == "RUNNING"
    assert WorkflowExecution.objects.count() == 1


# --- cancel / retry --------------------------------------------------------------------------

@pytest.mark.django_db
def test_cancel_pending_execution(api, workflow, make_execution):
    execution = make_execution(workflow, status="PENDING")
    response = api.post(f"/api/executions/{execution.pk}/cancel")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "CANCELLED"
    assert "steps" in response.json()


@pytest.mark.django_db
def test_cancel_finished_execution_is_409(api, workflow, make_execution):
    execution = make_execution(workflow, status="COMPLETED")
    response = api.post(f"/api/executions/{execution.pk}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "execution_finished"


@pytest.mark.django_db
def test_retry_failed_execution_answers_202_with_a_new_execution(api, workflow, make_execution):
    failed = make_execution(
        workflow, status="FAILED",
        steps=[("greet", 1, "TRANSFORM", "COMPLETED"), ("check", 2, "CONDITION", "FAILED")],
        error={"type": "TemplateError", "message": "boom", "step": "check", "details": {}},
    )
    response = api.post(f"/api/executions/{failed.pk}/retry")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["id"] != str(failed.pk)
    assert body["retry_of"] == str(failed.pk)
    assert body["trigger_type"] == "RETRY"


@pytest.mark.django_db
def test_retry_completed_execution_is_409(api, workflow, make_execution):
    execution = make_execution(workflow, status="COMPLETED")
    response = api.post(f"/api/executions/{execution.pk}/retry")
    assert response.status_code == 409
    assert response.json()["code"] == "execution_not_retryable"
    assert WorkflowExecution.objects.count() == 1


@pytest.mark.django_db
def test_retry_of_a_run_of_a_deactivated_workflow_is_409_and_starts_nothing(api, workflow, make_execution):
    failed = make_execution(workflow, status="FAILED",
                            error={"type": "TemplateError", "message": "boom", "step": None, "details": {}})
    Workflow.objects.filter(pk=workflow.pk).update(is_active=False)
    response = api.post(f"/api/executions/{failed.pk}/retry")
    assert response.status_code == 409
    assert response.json()["code"] == "workflow_inactive"
    assert WorkflowExecution.objects.count() == 1
