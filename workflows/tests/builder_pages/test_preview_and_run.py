"""The preview page (nothing persisted, htmx partial with per-step cards), the run page,
the detail page's versions (diff, restore)."""
from __future__ import annotations

import pytest

from workflows.models import WorkflowExecution, WorkflowVersion

from .helpers import text

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_the_preview_form_is_built_from_the_variables(page, flow):
    body = text(page.get(f"/workflows/{flow.pk}/preview"))
    assert 'name="var__ticket"' in body and 'placeholder="Printer on fire"' in body
    assert 'name="var__tone"' in body and 'placeholder="calm"' in body
    assert 'name="use_sample_data"' in body and 'name="dry_run_models"' in body
    assert 'name="input_json"' in body and f'hx-post="/workflows/{flow.pk}/preview"' in body


def test_preview_with_sample_data_answers_step_cards_and_saves_nothing(page, flow):
    response = page.post(f"/workflows/{flow.pk}/preview", {"mode": "form", "use_sample_data": "on"}, **HTMX)
    body = text(response)
    assert response.status_code == 200 and "<html" not in body  # the partial only
    assert body.count('data-testid="step-card"') == 2
    assert "Summary: Summarise Printer on fire in a calm tone." in body
    assert "badge-completed" in body and "tokens" in body and "<details" in body
    assert not WorkflowExecution.objects.exists()
    assert WorkflowVersion.objects.filter(workflow=flow).count() == 1


def test_preview_in_raw_json_mode(page, flow):
    response = page.post(f"/workflows/{flow.pk}/preview",
                         {"mode": "json", "input_json": '{"ticket": "Fax jam", "tone": "dry"}'}, **HTMX)
    assert "Summarise Fax jam in a dry tone." in text(response)


def test_invalid_json_is_refused_with_its_line_and_column(page, flow):
    response = page.post(f"/workflows/{flow.pk}/preview", {"mode": "json", "input_json": '{\n  "ticket": ,\n}'},
                         **HTMX)
    body = text(response)
    assert "line 2, column 13" in body and 'data-testid="step-card"' not in body


def test_invalid_input_names_the_variable(page, flow):
    response = page.post(f"/workflows/{flow.pk}/preview", {"mode": "form"}, **HTMX)  # no sample data: ticket missing
    body = text(response)
    assert "The input is invalid" in body and "ticket" in body


def test_a_dry_run_calls_no_model_and_marks_the_cards(page, flow):
    normal = text(page.post(f"/workflows/{flow.pk}/preview", {"mode": "form", "use_sample_data": "on"}, **HTMX))
    body = text(page.post(f"/workflows/{flow.pk}/preview",
                          {"mode": "form", "use_sample_data": "on", "dry_run_models": "on"}, **HTMX))
    assert body.count('data-testid="step-card"') == 2
    assert '<span class="tag">dry run</span>' in body and '<span class="tag">dry run</span>' not in normal
    assert "was not called" in body


def test_without_htmx_the_preview_renders_the_whole_page(page, flow):
    body = text(page.post(f"/workflows/{flow.pk}/preview", {"mode": "form", "use_sample_data": "on"}))
    assert "<html" in body and body.count('data-testid="step-card"') == 2


def test_run_starts_an_execution_and_opens_its_page(page, flow, monkeypatch):
    monkeypatch.setattr("workflows.services.dispatch._send", lambda *a, **k: None)
    body = text(page.get(f"/workflows/{flow.pk}/run"))
    assert 'value="Printer on fire"' in body  # starts from the sample
    response = page.post(f"/workflows/{flow.pk}/run", {"mode": "form", "var__ticket": "Toner low"})
    execution = WorkflowExecution.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/executions/{execution.pk}/"
    assert execution.input == {"ticket": "Toner low", "tone": "calm"} and execution.trigger_type == "MANUAL"


def test_run_with_invalid_input_shows_the_error_and_starts_nothing(page, flow):
    body = text(page.post(f"/workflows/{flow.pk}/run", {"mode": "form", "var__ticket": ""}))
    assert "The input is invalid" in body
    assert not WorkflowExecution.objects.exists()


def test_detail_shows_variables_pipeline_versions_and_links(page, flow, monkeypatch):
    monkeypatch.setattr("workflows.services.dispatch._send", lambda *a, **k: None)
    from triggers.tests.helpers import create_trigger
    from workflows.services.executions import execution_start

    execution = execution_start(workflow=flow, inputs={"ticket": "x"})
    trigger, _ = create_trigger(flow, "MANUAL", name="Button")
    body = text(page.get(f"/workflows/{flow.pk}/"))
    assert "input.ticket" in body and "input.tone" in body
    assert 'data-testid="pipeline"' in body and "echo:echo" in body and "TRANSFORM" in body
    assert f'href="/executions/{execution.pk}/"' in body
    assert f'href="/triggers/{trigger.pk}/"' in body
    for path in ("edit", "preview", "run"):
        assert f'href="/workflows/{flow.pk}/{path}"' in body


def test_versions_show_a_diff_and_restore_makes_a_new_version(page, flow):
    from workflows.services.workflows import workflow_update

    workflow_update(workflow=flow, data={"steps": [
        {"name": "draft", "type": "PROMPT",
         "config": {"template": "Shorter: {{ input.ticket }}", "model": {"provider": "echo", "model": "echo"}}},
    ]})
    body = text(page.get(f"/workflows/{flow.pk}/"))
    assert "Changes from v1" in body
    assert 'class="diff-add">+' in body and "Shorter: {{ input.ticket }}" in body
    assert f'action="/workflows/{flow.pk}/versions/1/restore"' in body

    response = page.post(f"/workflows/{flow.pk}/versions/1/restore", follow=True)
    assert "Version 1 restored as version 3" in text(response)
    latest = WorkflowVersion.objects.filter(workflow=flow).order_by("-number").first()
    assert latest.number == 3 and [s["name"] for s in latest.definition["steps"]] == ["draft", "final"]


def test_restoring_a_missing_version_says_so(page, flow):
    response = page.post(f"/workflows/{flow.pk}/versions/9/restore", follow=True)
    assert "has no version 9" in text(response)
