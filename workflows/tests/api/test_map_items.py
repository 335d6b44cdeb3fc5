"""A MAP step's items in the API (the run's detail and the paginated item rows) and on
the execution page. The run is driven in-process (workflows/tests/support/inprocess.py)."""
from __future__ import annotations

import pytest
from django.test import Client

from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = [{"name": "words", "type": "JSON", "required": True}]


@pytest.fixture
def map_run(user, monkeypatch, settings):
    sent = capture_broker(monkeypatch, settings)
    workflow = make_workflow(user, variables=WORDS, steps=[
        {"name": "each", "type": "MAP", "config": {
            "items": "input.words", "on_item_error": "continue",
            "step": {"type": "TRANSFORM", "config": {"template": "{{ index }}={{ item.w }}"}}}},
        {"name": "after", "type": "TRANSFORM", "config": {"template": "{{ steps.each.output | length }}"}},
    ])
    words = [{"w": f"w{i}"} for i in range(60)] + [{}]  # the last one has no w: it fails, and continues
    execution = execution_start(workflow=workflow, inputs={"words": words}, started_by=user)
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    return execution


def test_the_run_lists_its_steps_and_the_map_step_counts_its_items(api, map_run):
    body = api.get(f"/api/executions/{map_run.id}").json()
    assert [s["name"] for s in body["steps"]] == ["each", "after"]
    each = body["steps"][0]
    assert each["type"] == "MAP" and each["item_index"] is None
    assert each["items"] == {"total": 61, "completed": 60, "failed": 1,
                             "url": f"/api/executions/{map_run.id}/steps/each/items"}
    assert len(each["output"]) == 61 and each["output"][-1] is None
    assert body["steps"][1]["items"] is None


def test_the_items_of_a_map_step_come_in_pages_in_item_order(api, map_run):
    first = api.get(f"/api/executions/{map_run.id}/steps/each/items?page_size=25").json()
    assert first["count"] == 61
    assert [row["item_index"] for row in first["results"]] == list(range(25))
    assert first["results"][3]["output"] == "3=w3" and first["results"][3]["input"]["item"] == {"w": "w3"}
    last = api.get(f"/api/executions/{map_run.id}/steps/each/items?page_size=25&page=3").json()
    assert [row["item_index"] for row in last["results"]] == list(range(50, 61))
    assert last["results"][-1]["status"] == "FAILED" and last["results"][-1]["error"]["type"] == "TemplateError"


def test_items_of_a_step_that_is_no_map_or_of_someone_elses_run_answer_404(api, other_api, map_run):
    response = api.get(f"/api/executions/{map_run.id}/steps/after/items")
    assert response.status_code == 404
    assert response.json()["extra"] == {"step": "after"}
    assert other_api.get(f"/api/executions/{map_run.id}/steps/each/items").status_code == 404
    bad_page = api.get(f"/api/executions/{map_run.id}/steps/each/items?page_size=0")
    assert bad_page.status_code == 400 and "page_size" in bad_page.json()["extra"]["errors"]


def test_the_execution_page_shows_a_page_of_items_and_links_to_the_next(user, map_run):
    page = Client()
    page.force_login(user)
    body = page.get(f"/executions/{map_run.id}/").content.decode()
    assert "61 items · 60 completed · 1 failed" in body
    assert 'data-item="0"' in body and 'data-item="49"' in body and 'data-item="50"' not in body
    assert "?items_page=2" in body
    second = page.get(f"/executions/{map_run.id}/?items_page=2").content.decode()
    assert 'data-item="60"' in second and 'data-item="0"' not in second
    assert "TemplateError" in second


def _map_workflow_via_api(api, inner: dict, **config) -> int:
    body = {"name": "Fan out", "variables": WORDS, "steps": [
        {"name": "each", "type": "MAP", "config": {"items": "input.words", "step": inner, **config}}]}
    response = api.post("/api/workflows", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def test_a_preview_runs_the_first_items_in_process_and_says_so(api):
    workflow_id = _map_workflow_via_api(api, {"type": "PROMPT", "config": {
        "template": "Tell me about {{ item }} ({{ index }})", "model": {"provider": "echo", "model": "echo"}}})
    words = [f"w{i}" for i in range(25)]
    body = api.post(f"/api/workflows/{workflow_id}/preview", {"input": {"words": words}}, format="json").json()
    assert body["status"] == "COMPLETED"
    step = body["steps"][0]
    assert step["type"] == "MAP" and step["output"] == [f"Tell me about w{i} ({i})" for i in range(20)]
    assert step["token_estimate"]["total"] > 0
    assert any("Only the first 20 of 25 items were run in this preview" in w for w in body["warnings"])


def test_a_dry_run_preview_calls_no_model_for_the_items(api):
    workflow_id = _map_workflow_via_api(api, {"type": "PROMPT", "config": {
        "template": "Sum up {{ item }}", "output_format": "json",
        "model": {"provider": "openai", "model": "gpt-4o-mini"}}})
    body = api.post(f"/api/workflows/{workflow_id}/preview", {"input": {"words": ["a", "b"]}, "dry_run_models": True},
                    format="json").json()
    step = body["steps"][0]
    assert body["status"] == "COMPLETED" and step["dry_run"] is True
    assert step["output"] == ["[dry run: openai:gpt-4o-mini was not called]"] * 2
    assert step["token_estimate"]["estimated"] is True


def test_saving_a_map_whose_inner_step_is_wrong_answers_400_naming_the_field(api):
    body = {"name": "Bad", "variables": WORDS, "steps": [
        {"name": "each", "type": "MAP", "config": {"items": "input.words", "concurrency": 0,
                                                   "step": {"type": "PROMPT", "config": {"template": "{{ itme }}"}}}}]}
    response = api.post("/api/workflows", body, format="json")
    assert response.status_code == 400
    errors = response.json()["extra"]["errors"]
    assert "steps[0].config.concurrency" in errors
    assert "set config.model" in errors["steps[0].config.step.config.model"][0]
    assert any("itme" in m for m in errors["steps[0].config.step.config.template"])
