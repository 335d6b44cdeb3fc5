"""The editor: /workflows/new and /workflows/{id}/edit. Saving goes through
workflow_create / workflow_update (a new version); their errors appear next to the field
they name."""
from __future__ import annotations

import re

import pytest

from workflows.models import Workflow, WorkflowVersion

from .helpers import editor_post, form_body, text

pytestmark = pytest.mark.django_db

ECHO_STEP = {"provider": "echo", "model": "echo"}


def _field_error(body: str, field_id: str) -> str:
    """The error text shown in the field block of the input ``field_id``."""
    start = body.index(f'id="{field_id}"')
    block_start = body.rfind('<div class="field', 0, start)
    block_end = body.index("</div>", start)
    errors = re.findall(r'<p class="field-error" role="alert">(.*?)</p>', body[block_start:block_end], re.S)
    return " ".join(errors)


def test_the_new_page_starts_with_one_variable_and_one_step(page):
    response = page.get("/workflows/new")
    body = text(response)
    assert response.status_code == 200
    assert 'name="variables-0-name"' in body and 'name="steps-0-template"' in body
    assert "<template data-empty-form>" in body and "steps-__prefix__-name" in body  # for "Add step"
    assert '<option value="echo" selected>echo</option>' in body  # model picker from the registry
    assert 'datalist id="model-names"' in body


def test_create_a_workflow_with_two_steps_makes_version_1(page, user):
    body = editor_post(
        name="Ticket triage", description="Sorts tickets",
        variables=[{"name": "ticket", "sample": "Printer on fire"}],
        steps=[
            {"name": "draft", "template": "Summarise {{ input.ticket }}", **ECHO_STEP, "model_params": '{"delay_ms": 5}'},
            {"name": "final", "type": "TRANSFORM", "template": "Summary: {{ steps.draft.output }}",
             "output_format": "text"},
        ],
    )
    response = page.post("/workflows/new", body)
    workflow = Workflow.objects.get(name="Ticket triage")
    assert response.status_code == 302 and response["Location"] == f"/workflows/{workflow.pk}/"
    assert workflow.owner == user and workflow.description == "Sorts tickets"
    version = WorkflowVersion.objects.get(workflow=workflow)
    assert version.number == 1
    steps = version.definition["steps"]
    assert [(s["name"], s["order"], s["type"]) for s in steps] == [("draft", 1, "PROMPT"), ("final", 2, "TRANSFORM")]
    assert steps[0]["config"] == {"template": "Summarise {{ input.ticket }}",
                                  "model": {"provider": "echo", "model": "echo", "delay_ms": 5}}
    assert steps[1]["config"] == {"template": "Summary: {{ steps.draft.output }}"}
    assert version.definition["variables"][0] | {"description": ""} == {
        "name": "ticket", "type": "STRING", "required": True, "default": None, "sample": "Printer on fire",
        "description": ""}
    followed = page.get(response["Location"])
    assert "created (version 1)" in text(followed)


def test_editing_saves_a_new_version_and_an_unchanged_save_does_not(page, flow):
    response = page.get(f"/workflows/{flow.pk}/edit")
    body = form_body(response, "workflow-editor")
    assert body["steps-0-name"] == "draft" and body["steps-1-type"] == "TRANSFORM"
    assert body["variables-1-default"] == "calm"

    unchanged = page.post(f"/workflows/{flow.pk}/edit", body)
    assert unchanged.status_code == 302
    assert WorkflowVersion.objects.filter(workflow=flow).count() == 1, "the same definition is no new version"

    body["steps-1-template"] = "Final: {{ steps.draft.output }}"
    body["note"] = "clearer label"
    response = page.post(f"/workflows/{flow.pk}/edit", body, follow=True)
    versions = list(WorkflowVersion.objects.filter(workflow=flow).order_by("number"))
    assert [v.number for v in versions] == [1, 2]
    assert versions[1].note == "clearer label"
    assert versions[1].definition["steps"][1]["config"]["template"] == "Final: {{ steps.draft.output }}"
    assert "as version 2" in text(response)


def test_reorder_and_remove_steps_and_variables(page, flow):
    body = form_body(page.get(f"/workflows/{flow.pk}/edit"), "workflow-editor")
    # The TRANSFORM no longer reads the draft, so it can go first; the draft is removed.
    body["steps-1-template"] = "Hello {{ input.ticket }}"
    body["steps-1-ORDER"], body["steps-0-ORDER"] = "1", "2"
    body["steps-0-DELETE"] = "on"
    body["variables-1-DELETE"] = "on"
    body["steps-0-template"] = "Summarise {{ input.ticket }} in a {{ input.tone }} tone."
    response = page.post(f"/workflows/{flow.pk}/edit", body)
    assert response.status_code == 302, text(response)
    definition = WorkflowVersion.objects.get(workflow=flow, number=2).definition
    assert [(s["name"], s["order"]) for s in definition["steps"]] == [("final", 1)]
    assert [v["name"] for v in definition["variables"]] == ["ticket"]


def test_moving_a_step_reorders_the_pipeline(page, user):
    steps = [{"name": "a", "type": "TRANSFORM", "template": "A"}, {"name": "b", "type": "TRANSFORM", "template": "B"}]
    steps[0]["ORDER"], steps[1]["ORDER"] = "2", "1"
    response = page.post("/workflows/new", editor_post(name="Swap", steps=steps))
    assert response.status_code == 302
    definition = Workflow.objects.get(name="Swap").versions.get().definition
    assert [(s["name"], s["order"]) for s in definition["steps"]] == [("b", 1), ("a", 2)]


def test_a_template_error_is_shown_next_to_the_template_of_that_step(page):
    body = editor_post(name="Broken", steps=[
        {"name": "first", "type": "TRANSFORM", "template": "fine"},
        {"name": "second", "type": "TRANSFORM", "template": "{{ input.x "},
    ])
    response = page.post("/workflows/new", body)
    assert response.status_code == 400
    page_text = text(response)
    assert "steps[1].config.template" in page_text  # the service's sentence on top
    assert _field_error(page_text, "id_steps-1-template")
    assert not _field_error(page_text, "id_steps-0-template")
    assert not Workflow.objects.exists()


def test_errors_land_on_the_step_as_the_builder_ordered_it(page):
    # The second form in the page is the first step by position: its error is its own.
    body = editor_post(name="Ordered", steps=[
        {"name": "later", "type": "TRANSFORM", "template": "ok", "ORDER": "2"},
        {"name": "earlier", "type": "TRANSFORM", "template": "{% if %}", "ORDER": "1"},
    ])
    page_text = text(page.post("/workflows/new", body))
    assert _field_error(page_text, "id_steps-1-template")
    assert not _field_error(page_text, "id_steps-0-template")
    # ... and the page shows the steps in that order.
    assert page_text.index('value="earlier"') < page_text.index('value="later"')


def test_a_missing_model_and_a_bad_on_error_are_shown_beside_their_fields(page):
    body = editor_post(name="No model", steps=[
        {"name": "ask", "template": "Hi", "provider": "", "model": "", "on_error": "skip_to",
         "on_error_target": "nowhere"},
    ])
    page_text = text(page.post("/workflows/new", body))
    assert "config.model" in page_text
    assert _field_error(page_text, "id_steps-0-model")
    assert "nowhere" in _field_error(page_text, "id_steps-0-on_error")


def test_a_bad_variable_name_is_shown_beside_it(page):
    body = editor_post(name="Vars", variables=[{"name": "good"}, {"name": "not ok"}],
                       steps=[{"name": "s", "type": "TRANSFORM", "template": "x"}])
    page_text = text(page.post("/workflows/new", body))
    assert _field_error(page_text, "id_variables-1-name")
    assert not _field_error(page_text, "id_variables-0-name")


def test_typed_defaults_are_checked_against_the_variable_type(page):
    body = editor_post(name="Types", variables=[{"name": "n", "type": "NUMBER", "default": "forty"},
                                                {"name": "j", "type": "JSON", "sample": '{"a": 1,}'}],
                       steps=[{"name": "s", "type": "TRANSFORM", "template": "x"}])
    page_text = text(page.post("/workflows/new", body))
    assert "line 1, column" in _field_error(page_text, "id_variables-1-sample")
    assert _field_error(page_text, "id_variables-0-default")
    assert not Workflow.objects.exists()


def test_condition_and_retry_fields_become_the_step_config(page):
    body = editor_post(name="Branchy", steps=[
        {"name": "draft", "template": "Hi", **ECHO_STEP, "max_retries": "2", "backoff_base_seconds": "0.5",
         "retry_on": ["transient", "invalid_output"], "output_format": "json", "timeout_seconds": "30"},
        {"name": "check", "type": "CONDITION", "expression": "steps.draft.output is defined",
         "if_true": "continue", "if_false": "skip_to:done", "on_error": "continue", "default_output": "false"},
        {"name": "done", "type": "TRANSFORM", "template": "ok"},
    ])
    response = page.post("/workflows/new", body)
    assert response.status_code == 302, text(response)
    draft, check, _ = Workflow.objects.get().versions.get().definition["steps"]
    assert draft["retry_config"] == {"max_retries": 2, "backoff_base_seconds": 0.5, "jitter": True,
                                     "retry_on": ["transient", "invalid_output"]}
    assert draft["config"]["output_format"] == "json" and draft["timeout_seconds"] == 30
    assert check["config"] == {"expression": "steps.draft.output is defined", "if_true": "continue",
                               "if_false": "skip_to:done", "default_output": False}
    assert check["on_error"] == "continue"


def test_config_keys_without_a_field_survive_an_edit(page, user):
    from workflows.tests.factories import make_workflow

    workflow = make_workflow(user, name="Described", steps=[
        {"name": "s", "type": "TRANSFORM", "config": {"template": "x", "description": "kept"}},
    ])
    body = form_body(page.get(f"/workflows/{workflow.pk}/edit"), "workflow-editor")
    assert '"description": "kept"' in body["steps-0-extra_config"]
    body["steps-0-template"] = "y"
    assert page.post(f"/workflows/{workflow.pk}/edit", body).status_code == 302
    assert workflow.versions.get(number=2).definition["steps"][0]["config"] == {"template": "y", "description": "kept"}


def test_a_map_step_is_built_from_its_fields_and_shown_again_for_an_edit(page):
    inner = '{"type": "TRANSFORM", "config": {"template": "{{ index }}: {{ item }}"}}'
    body = editor_post(name="Fan out", variables=[{"name": "words", "type": "JSON", "sample": '["a"]'}], steps=[
        {"name": "each", "type": "MAP", "map_items": "input.words", "map_step": inner, "map_concurrency": "4",
         "map_on_item_error": "drop"},
    ])
    response = page.post("/workflows/new", body)
    assert response.status_code == 302, text(response)
    workflow = Workflow.objects.get()
    step = workflow.versions.get().definition["steps"][0]
    assert step["type"] == "MAP"
    assert step["config"] == {"items": "input.words", "concurrency": 4, "on_item_error": "drop",
                              "step": {"type": "TRANSFORM", "config": {"template": "{{ index }}: {{ item }}"}}}
    again = form_body(page.get(f"/workflows/{workflow.pk}/edit"), "workflow-editor")
    assert again["steps-0-map_items"] == "input.words" and '"{{ index }}: {{ item }}"' in again["steps-0-map_step"]
    assert not again.get("steps-0-extra_config")


def test_errors_of_a_map_steps_inner_step_are_shown_beside_the_inner_step_field(page):
    body = editor_post(name="Bad map", variables=[{"name": "words", "type": "JSON"}], steps=[
        {"name": "each", "type": "MAP", "map_items": "input.words", "map_step": '{"type": "TRANSFORM", "config": {}}'},
    ])
    response = page.post("/workflows/new", body)
    assert response.status_code == 400
    assert "is required" in _field_error(text(response), "id_steps-0-map_step")
    assert not Workflow.objects.exists()
