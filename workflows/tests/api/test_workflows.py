"""Workflows CRUD with nested variables and steps: validation, ownership, versions, restore."""
from __future__ import annotations

import json

import pytest

from workflows.models import Workflow

from .conftest import definition_state


@pytest.mark.django_db
def test_create_returns_nested_definition_and_version_1(api, workflow_payload):
    response = api.post("/api/workflows/", workflow_payload(), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == 1
    assert body["is_active"] is True
    assert [v["name"] for v in body["variables"]] == ["name", "times"]
    assert body["variables"][1] == {
        "name": "times", "type": "NUMBER", "required": False, "default": 1, "sample": 2, "description": "",
    }
    assert [(s["name"], s["order"], s["type"]) for s in body["steps"]] == [
        ("greet", 1, "TRANSFORM"), ("check", 2, "CONDITION"), ("ask", 3, "PROMPT"), ("shout", 4, "TRANSFORM"),
    ]
    workflow = Workflow.objects.get(pk=body["id"])
    assert workflow.owner.username == "builder"
    assert workflow.versions.get().note == "created"


@pytest.mark.django_db
def test_step_order_defaults_to_list_position(api, workflow_payload):
    steps = [
        {"name": "a", "type": "TRANSFORM", "config": {"template": "x"}},
        {"name": "b", "type": "TRANSFORM", "config": {"template": "{{ steps.a.output }}"}},
    ]
    response = api.post("/api/workflows/", workflow_payload(steps=steps), format="json")
    assert response.status_code == 201, response.json()
    assert [s["order"] for s in response.json()["steps"]] == [1, 2]


@pytest.mark.django_db
def test_list_and_detail_with_and_without_trailing_slash(api, workflow, other_workflow):
    for path in ("/api/workflows/", "/api/workflows"):
        body = api.get(path).json()
        assert body["count"] == 1
        assert [w["id"] for w in body["results"]] == [workflow.pk]
        assert body["results"][0]["version"] == 1
    for path in (f"/api/workflows/{workflow.pk}/", f"/api/workflows/{workflow.pk}"):
        response = api.get(path)
        assert response.status_code == 200
        assert response.json()["name"] == "Greeter"


@pytest.mark.django_db
def test_put_replaces_lists_and_makes_a_version(api, workflow, workflow_payload):
    body = workflow_payload(
        variables=[{"name": "topic", "type": "STRING"}],
        steps=[{"name": "only", "order": 5, "type": "TRANSFORM", "config": {"template": "{{ input.topic }}"}}],
        note="simplified",
    )
    response = api.put(f"/api/workflows/{workflow.pk}/", body, format="json")
    assert response.status_code == 200, response.json()
    assert [v["name"] for v in response.json()["variables"]] == ["topic"]
    assert [s["name"] for s in response.json()["steps"]] == ["only"]
    assert response.json()["version"] == 2
    assert workflow.versions.get(number=2).note == "simplified"
    assert workflow.steps.count() == 1


@pytest.mark.django_db
def test_patch_without_lists_keeps_them(api, workflow):
    response = api.patch(f"/api/workflows/{workflow.pk}", {"description": "new words", "is_active": False}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["description"] == "new words"
    assert response.json()["is_active"] is False
    assert len(response.json()["steps"]) == 4
    assert len(response.json()["variables"]) == 2


@pytest.mark.django_db
def test_patch_steps_only_replaces_steps(api, workflow):
    steps = [{"name": "one", "type": "TRANSFORM", "config": {"template": "{{ input.name }}"}}]
    response = api.patch(f"/api/workflows/{workflow.pk}/", {"steps": steps}, format="json")
    assert response.status_code == 200, response.json()
    assert [s["name"] for s in response.json()["steps"]] == ["one"]
    assert len(response.json()["variables"]) == 2
    assert response.json()["version"] == 2


@pytest.mark.django_db
def test_no_op_update_makes_no_version(api, workflow, workflow_payload):
    response = api.put(f"/api/workflows/{workflow.pk}/", workflow_payload(), format="json")
    assert response.status_code == 200
    assert response.json()["version"] == 1
    response = api.patch(f"/api/workflows/{workflow.pk}/", {"description": "only words"}, format="json")
    assert response.json()["version"] == 1
    assert workflow.versions.count() == 1


@pytest.mark.django_db
def test_every_definition_change_makes_a_version(api, workflow):
    api.patch(f"/api/workflows/{workflow.pk}/", {"timeout_seconds": 30}, format="json")
    # (the steps read input.times, so it stays declared: dropping it would be refused)
    api.patch(f"/api/workflows/{workflow.pk}/", {"variables": [
        {"name": "name", "type": "STRING"}, {"name": "times", "type": "NUMBER", "required": False, "default": 3},
    ]}, format="json")
    numbers = list(workflow.versions.order_by("number").values_list("number", flat=True))
    assert numbers == [1, 2, 3]
    latest = workflow.versions.get(number=3)
    assert latest.definition["workflow"]["timeout_seconds"] == 30
    assert [(v["name"], v["default"]) for v in latest.definition["variables"]] == [("name", None), ("times", 3)]


# --- rejected writes change nothing -------------------------------------------------------

def _bad_definitions() -> list:
    greet = {"name": "greet", "order": 1, "type": "TRANSFORM", "config": {"template": "hi"}}
    return [
        pytest.param({"variables": [{"name": "x", "type": "DATE"}]}, "variables[0].type", id="unknown-variable-type"),
        pytest.param({"steps": [greet, {**greet, "order": 2}]}, "steps[1].name", id="duplicate-step-names"),
        pytest.param({"steps": [greet, {**greet, "name": "again"}]}, "steps[1].order", id="duplicate-step-orders"),
        pytest.param(
            {"steps": [{**greet, "config": {"template": "{{ input.name "}}]}, "steps[0].config.template",
            id="template-does-not-parse",
        ),
        pytest.param(
            {"steps": [{"name": "c", "order": 1, "type": "CONDITION",
                        "config": {"expression": "true", "if_true": "skip_to:nowhere"}}, {**greet, "order": 2}]},
            "steps[0]", id="skip-to-unknown-step",
        ),
        pytest.param(
            {"steps": [greet, {"name": "c", "order": 2, "type": "CONDITION",
                               "config": {"expression": "true", "if_true": "skip_to:greet"}}]},
            "steps[1]", id="skip-to-earlier-step",
        ),
        pytest.param(
            {"steps": [{**greet, "on_error": "skip_to:greet"}, {**greet, "name": "b", "order": 2}]},
            "steps[0]", id="on-error-skip-to-itself",
        ),
        pytest.param({"steps": [{**greet, "type": "LOOP"}]}, "steps[0].type", id="unknown-step-type"),
        pytest.param({"steps": [{**greet, "name": "not an identifier"}]}, "steps[0].name", id="step-name-not-identifier"),
        pytest.param({"variables": [{"name": "1x"}]}, "variables[0].name", id="variable-name-not-identifier"),
        pytest.param({"variables": [{"name": "a"}, {"name": "a"}]}, "variables[1].name", id="duplicate-variables"),
        pytest.param({"steps": [{**greet, "retry_config": {"max_retries": -1}}]}, "steps[0].retry_config",
                     id="negative-retries"),
        pytest.param({"steps": [{**greet, "order": -1}]}, "steps[0].order", id="negative-order"),
        pytest.param({"steps": "greet"}, "steps", id="steps-not-a-list"),
        pytest.param({"steps": [greet, 3]}, "steps[1]", id="step-not-an-object"),
        pytest.param({"steps": [{**greet, "config": []}]}, "steps[0].config", id="config-not-an-object"),
        pytest.param({"steps": [{"order": 1, "type": "TRANSFORM"}]}, "steps[0].name", id="step-without-name"),
        pytest.param({"timeout_seconds": 0}, "timeout_seconds", id="zero-timeout"),
        pytest.param({"max_concurrent_executions": -2}, "max_concurrent_executions", id="negative-concurrency"),
        pytest.param({"max_concurrent_executions": "many"}, "max_concurrent_executions", id="concurrency-not-a-number"),
        pytest.param({"is_active": "perhaps"}, "is_active", id="is-active-not-boolean"),
        pytest.param({"name": ""}, "name", id="blank-name"),
        pytest.param({"name": ["x"]}, "name", id="name-not-a-string"),
        pytest.param({"variables": [{"name": "v", "default": "a\u0000b"}]}, "variables[0].default", id="nul-character"),
    ]


def _assert_names(errors: dict, expected_prefix: str) -> None:
    assert any(path.startswith(expected_prefix) for path in errors), errors


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "path"), _bad_definitions())
def test_invalid_create_is_400_and_creates_nothing(api, workflow_payload, change, path):
    response = api.post("/api/workflows/", workflow_payload(**change), format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["message"]
    _assert_names(body["extra"]["errors"], path)
    assert Workflow.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(("change", "path"), _bad_definitions())
@pytest.mark.parametrize("method", ["put", "patch"])
def test_invalid_update_is_400_and_changes_nothing(api, workflow, workflow_payload, change, path, method):
    before = definition_state(workflow)
    body = workflow_payload(**change) if method == "put" else change
    response = getattr(api, method)(f"/api/workflows/{workflow.pk}/", body, format="json")
    assert response.status_code == 400, response.json()
    _assert_names(response.json()["extra"]["errors"], path)
    assert definition_state(workflow) == before


@pytest.mark.django_db
def test_definition_errors_use_the_invalid_definition_code(api, workflow_payload):
    steps = [{"name": "a", "order": 1, "type": "TRANSFORM", "config": {"template": "{% for %}"}}]
    body = api.post("/api/workflows/", workflow_payload(steps=steps), format="json").json()
    assert body["code"] == "invalid_definition"
    assert "steps[0]" in body["message"]


@pytest.mark.django_db
def test_step_with_another_users_prompt_is_rejected_naming_it(api, workflow_payload, other_prompt):
    steps = [{"name": "ask", "order": 1, "type": "PROMPT", "prompt": other_prompt.pk, "config": {}}]
    response = api.post("/api/workflows/", workflow_payload(steps=steps), format="json")
    assert response.status_code == 400
    assert str(other_prompt.pk) in response.json()["extra"]["errors"]["steps[0].prompt"][0]
    assert Workflow.objects.count() == 0


@pytest.mark.django_db
def test_step_with_own_prompt_is_linked(api, workflow_payload, prompt):
    steps = [{"name": "ask", "order": 1, "type": "PROMPT", "prompt": prompt.pk, "config": {}}]
    response = api.post("/api/workflows/", workflow_payload(steps=steps), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["steps"][0]["prompt"] == prompt.pk
    version = Workflow.objects.get(pk=response.json()["id"]).versions.get()
    assert version.definition["steps"][0]["prompt"]["template"] == prompt.template


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"name": "x", ', "application/json"),
        ("not json at all", "application/json"),
        ('{"name": NaN}', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
)
def test_non_json_body_is_400_and_changes_nothing(api, workflow, body, content_type):
    before = definition_state(workflow)
    for method, url in (("post", "/api/workflows/"), ("put", f"/api/workflows/{workflow.pk}/"),
                        ("patch", f"/api/workflows/{workflow.pk}/")):
        response = getattr(api, method)(url, body, content_type=content_type)
        assert response.status_code == 400, (method, response.content)
        assert response.json()["code"] == "parse_error"
    assert definition_state(workflow) == before
    assert Workflow.objects.count() == 1


@pytest.mark.django_db
def test_body_that_is_not_an_object_is_400(api):
    response = api.post("/api/workflows/", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["message"]


@pytest.mark.django_db
def test_form_encoded_body_is_415(api):
    response = api.post("/api/workflows/", "name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["message"]


@pytest.mark.django_db
def test_oversize_body_is_413_json(api, workflow):
    big = {"name": "big", "description": "x" * (1024 * 1024 + 10)}
    response = api.post("/api/workflows/", big, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    response = api.patch(f"/api/workflows/{workflow.pk}/", big, format="json")
    assert response.status_code == 413
    assert Workflow.objects.count() == 1


@pytest.mark.django_db
def test_deeply_nested_json_is_400(api):
    body = '{"name": "deep", "steps": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = api.post("/api/workflows/", body, content_type="application/json")
    assert response.status_code == 400
    assert Workflow.objects.count() == 0


# --- ownership ---------------------------------------------------------------------------

@pytest.mark.django_db
def test_other_users_workflow_is_404_for_every_verb(api, other_workflow, workflow_payload):
    before = definition_state(other_workflow)
    base = f"/api/workflows/{other_workflow.pk}"
    calls = [
        ("get", f"{base}/", None),
        ("put", f"{base}/", workflow_payload()),
        ("patch", f"{base}/", {"name": "taken"}),
        ("delete", f"{base}/", None),
        ("post", f"{base}/execute", {"input": {"name": "x"}}),
        ("post", f"{base}/preview", {"input": {"name": "x"}}),
        ("get", f"{base}/versions/", None),
        ("get", f"{base}/versions/1", None),
        ("post", f"{base}/versions/1/restore", None),
    ]
    for method, url, body in calls:
        response = getattr(api, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.status_code)
        assert response.json()["code"] == "not_found"
    assert definition_state(other_workflow) == before
    assert other_workflow.executions.count() == 0
    assert api.get("/api/workflows/").json()["count"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("bad_id", ["abc", "0", "1e3", "%20", "%00", "99999999999999999999999", "9" * 5000])
def test_malformed_workflow_id_is_404_for_every_endpoint(api, bad_id):
    for method, suffix in (("get", "/"), ("patch", "/"), ("delete", "/"), ("post", "/execute"), ("post", "/preview"),
                           ("get", "/versions/"), ("post", "/versions/1/restore")):
        response = getattr(api, method)(f"/api/workflows/{bad_id}{suffix}", {}, format="json")
        assert response.status_code == 404, (method, suffix, response.status_code)


# --- delete --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_delete_removes_workflow_with_its_finished_runs(api, workflow, make_execution):
    make_execution(workflow, status="COMPLETED")
    assert api.delete(f"/api/workflows/{workflow.pk}").status_code == 204
    assert not Workflow.objects.filter(pk=workflow.pk).exists()


@pytest.mark.django_db
def test_delete_with_runs_in_flight_is_409(api, workflow, make_execution):
    make_execution(workflow, status="RUNNING")
    response = api.delete(f"/api/workflows/{workflow.pk}/")
    assert response.status_code == 409
    assert "cancel" in response.json()["message"]
    assert Workflow.objects.filter(pk=workflow.pk).exists()


# --- versions ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_versions_list_newest_first(api, workflow):
    api.patch(f"/api/workflows/{workflow.pk}/", {"timeout_seconds": 60, "note": "limit"}, format="json")
    response = api.get(f"/api/workflows/{workflow.pk}/versions")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [v["number"] for v in results] == [2, 1]
    assert set(results[0]) == {"number", "created_at", "note", "created_by", "definition"}
    assert results[0]["note"] == "limit"
    assert results[0]["created_by"] == "builder"
    assert [s["name"] for s in results[1]["definition"]["steps"]] == ["greet", "check", "ask", "shout"]


@pytest.mark.django_db
def test_restore_rebuilds_the_old_definition_as_a_new_version(api, workflow):
    steps = [{"name": "solo", "type": "TRANSFORM", "config": {"template": "{{ input.topic }}"}}]
    api.put(f"/api/workflows/{workflow.pk}/",
            {"name": "Greeter", "variables": [{"name": "topic"}], "steps": steps, "timeout_seconds": 9}, format="json")
    assert workflow.versions.count() == 2

    response = api.post(f"/api/workflows/{workflow.pk}/versions/1/restore/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["version"] == 3
    assert [s["name"] for s in body["steps"]] == ["greet", "check", "ask", "shout"]
    assert [v["name"] for v in body["variables"]] == ["name", "times"]
    assert body["timeout_seconds"] is None
    v3 = workflow.versions.get(number=3)
    assert v3.note == "restored from v1"
    v1 = workflow.versions.get(number=1)
    assert [s["config"] for s in v3.definition["steps"]] == [s["config"] for s in v1.definition["steps"]]


@pytest.mark.django_db
def test_restore_of_the_current_version_still_records_it(api, workflow):
    response = api.post(f"/api/workflows/{workflow.pk}/versions/1/restore")
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert workflow.versions.get(number=2).note == "restored from v1"


@pytest.mark.django_db
def test_restore_inlines_a_prompt_deleted_since(api, prompt, create_workflow):
    created = create_workflow(steps=[{"name": "ask", "order": 1, "type": "PROMPT", "prompt": prompt.pk, "config": {}}])
    workflow_id = created["id"]
    api.patch(f"/api/workflows/{workflow_id}/",
              {"steps": [{"name": "t", "type": "TRANSFORM", "config": {"template": "x"}}]}, format="json")
    assert api.delete(f"/api/prompts/{prompt.pk}/").status_code == 204

    response = api.post(f"/api/workflows/{workflow_id}/versions/1/restore")
    assert response.status_code == 200, response.json()
    step = response.json()["steps"][0]
    assert step["prompt"] is None
    assert step["config"]["template"] == "Summarise: {{ input.name }}"
    assert step["config"]["model"] == {"provider": "echo", "model": "echo"}


@pytest.mark.django_db
@pytest.mark.parametrize("number", ["7", "0", "abc"])
def test_restore_of_unknown_version_is_404(api, workflow, number):
    before = definition_state(workflow)
    response = api.post(f"/api/workflows/{workflow.pk}/versions/{number}/restore")
    assert response.status_code == 404
    assert response.json()["code"] == "version_not_found"
    assert definition_state(workflow) == before


@pytest.mark.django_db
def test_version_detail(api, workflow):
    response = api.get(f"/api/workflows/{workflow.pk}/versions/1/")
    assert response.status_code == 200
    assert response.json()["number"] == 1
    assert api.get(f"/api/workflows/{workflow.pk}/versions/2/").status_code == 404


@pytest.mark.django_db
def test_json_response_round_trips(api, workflow):
    body = api.get(f"/api/workflows/{workflow.pk}/").json()
    assert json.loads(json.dumps(body)) == body
