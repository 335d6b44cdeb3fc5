"""The admin that ops staff use: every page renders, filters work, actions never crash."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django import forms
from django.contrib import admin
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from workflows.models import ExecutionStatus, WorkflowExecution, WorkflowVersion

from .conftest import OpsWorld, make_execution, make_ops_workflow

pytestmark = pytest.mark.django_db

OUR_APPS = {"workflows", "triggers"}


def _admin_models() -> list[type]:
    return sorted(
        (model for model in admin.site._registry if model._meta.app_label in OUR_APPS),
        key=lambda m: m._meta.label,
    )


def changelist(model_or_label: Any) -> str:
    meta = model_or_label._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")


def change(obj: Any) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])


def rows(response) -> list[Any]:
    """The objects a changelist shows."""
    return list(response.context["cl"].result_list)


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


# --- every page -------------------------------------------------------------------


def test_every_model_of_ours_is_registered():
    labels = {m._meta.label for m in _admin_models()}
    assert labels >= {
        "workflows.Prompt", "workflows.Workflow", "workflows.WorkflowVersion", "workflows.WorkflowExecution",
        "workflows.WorkflowStepExecution", "triggers.WorkflowTrigger", "triggers.TriggerInvocation",
    }


@pytest.mark.parametrize("model", _admin_models(), ids=lambda m: m._meta.label)
def test_changelist_and_change_page_render_with_data(admin_client, ops_world: OpsWorld, model):
    response = admin_client.get(changelist(model))
    assert response.status_code == 200
    shown = rows(response)
    assert shown, f"{model._meta.label} changelist is empty although the fixture made rows"
    for obj in shown[:3]:
        page = admin_client.get(change(obj))
        assert page.status_code == 200, f"{model._meta.label} {obj.pk}"


def test_add_pages_render_for_definitions_and_are_refused_for_run_records(admin_client, ops_world):
    from triggers.models import TriggerInvocation
    from workflows.models import Prompt, Workflow, WorkflowStepExecution

    for model in (Workflow, Prompt):
        meta = model._meta
        assert admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add")).status_code == 200
    for model in (WorkflowExecution, WorkflowStepExecution, WorkflowVersion, TriggerInvocation):
        meta = model._meta
        assert admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_add")).status_code == 403


# --- executions ----------------------------------------------------------------------


def test_execution_list_shows_status_badge_duration_and_version(admin_client, ops_world):
    response = admin_client.get(changelist(WorkflowExecution))
    html = response.content.decode()
    assert 'class="pp-status pp-status-completed"' in html
    assert 'class="pp-status pp-status-failed"' in html
    assert "2.00 s" in html  # fixture runs take two seconds
    assert "v1" in html
    assert "running" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=FAILED", {"failed"}),
        ("status__exact=RUNNING", {"running"}),
        ("trigger_type__exact=SCHEDULED", {"scheduled"}),
        ("workflow__id__exact={other}", {"running"}),
        ("q=missing_step", {"failed"}),
        ("q=Other+flow", {"running"}),
        ("q={failed_id_prefix}", {"failed"}),
        ("created_at__year={year}", {"completed", "failed", "running", "scheduled"}),
    ],
)
def test_execution_filters_and_search(admin_client, ops_world, query, expected):
    names = {"completed", "failed", "running", "scheduled"}
    by_id = {getattr(ops_world, name).pk: name for name in names}
    query = query.format(
        other=ops_world.other_workflow.pk, failed_id_prefix=str(ops_world.failed.pk)[:13],
        year=ops_world.completed.created_at.year,
    )
    response = admin_client.get(f"{changelist(WorkflowExecution)}?{query}")
    assert response.status_code == 200
    assert {by_id[e.pk] for e in rows(response)} == expected


def test_execution_list_sorts_by_duration_and_version(admin_client, ops_world):
    for ordering in ("o=6", "o=-6", "o=7"):  # duration, duration desc, version (list_display columns)
        assert admin_client.get(f"{changelist(WorkflowExecution)}?{ordering}").status_code == 200


def test_execution_page_is_read_only_with_pretty_escaped_json_and_ordered_steps(admin_client, ops_world):
    response = admin_client.get(change(ops_world.completed))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<pre class="pp-json"' in html
    # Pretty (indented) and escaped: the output's markup is shown, never rendered.
    assert "&lt;b&gt;ünïcode&lt;/b&gt;" in html and "<b>ünïcode</b>" not in html
    assert "{\n  &quot;input&quot;: 3," in html or "\n  &quot;input&quot;: 3\n}" in html  # indented JSON
    inline = html[html.index('id="step_executions-group"'):]
    assert inline.index("<p>draft</p>") < inline.index("<p>shape</p>")  # ordered by step_order
    # No save buttons: a run's record is not edited by hand.
    assert 'name="_save"' not in html
    assert response.context["inline_admin_formsets"], "the step executions inline is missing"


def test_failed_execution_page_shows_the_error(admin_client, ops_world):
    html = admin_client.get(change(ops_world.failed)).content.decode()
    assert "TemplateError" in html and "missing_step" in html


def test_execution_cannot_be_changed_by_post(admin_client, ops_world):
    before = WorkflowExecution.objects.get(pk=ops_world.completed.pk)
    response = admin_client.post(change(ops_world.completed), {"status": "FAILED"})
    assert response.status_code == 403
    assert WorkflowExecution.objects.get(pk=before.pk).status == before.status


def _run_action(admin_client, action: str, executions: list[WorkflowExecution]):
    return admin_client.post(
        changelist(WorkflowExecution),
        {"action": action, "_selected_action": [str(e.pk) for e in executions], "index": "0"},
        follow=True,
    )


def test_cancel_action_on_a_finished_execution_reports_and_changes_nothing(admin_client, ops_world):
    finished = ops_world.completed
    before = WorkflowExecution.objects.values().get(pk=finished.pk)
    count_before = WorkflowExecution.objects.count()

    response = _run_action(admin_client, "cancel_executions", [finished])

    assert response.status_code == 200
    reported = messages_of(response)
    assert len(reported) == 1, reported
    level, text = reported[0]
    assert level in ("warning", "error") and str(finished.pk) in text
    assert WorkflowExecution.objects.values().get(pk=finished.pk) == before
    assert WorkflowExecution.objects.count() == count_before


def test_retry_action_on_a_completed_execution_reports_and_starts_nothing(admin_client, ops_world):
    count_before = WorkflowExecution.objects.count()
    response = _run_action(admin_client, "retry_executions", [ops_world.completed])
    reported = messages_of(response)
    assert len(reported) == 1 and reported[0][0] in ("warning", "error"), reported
    assert WorkflowExecution.objects.count() == count_before


def test_cancel_action_cancels_a_pending_execution_and_reports_per_execution(admin_client, ops_world):
    pending = make_execution(ops_world.other_workflow, ExecutionStatus.PENDING)
    response = _run_action(admin_client, "cancel_executions", [pending, ops_world.failed])
    reported = dict((text.split(":")[0], level) for level, text in messages_of(response))
    assert reported == {f"Execution {pending.pk}": "success", f"Execution {ops_world.failed.pk}": "warning"}
    assert WorkflowExecution.objects.get(pk=pending.pk).status == ExecutionStatus.CANCELLED


# --- step executions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=FAILED", {("failed", "shape")}),
        ("step_type__exact=PROMPT", {("completed", "draft"), ("failed", "draft")}),
        ("q=shape", {("completed", "shape"), ("failed", "shape")}),
        ("q={failed_id}", {("failed", "draft"), ("failed", "shape")}),
    ],
)
def test_step_execution_filters_and_search(admin_client, ops_world, query, expected):
    from workflows.models import WorkflowStepExecution

    by_id = {ops_world.completed.pk: "completed", ops_world.failed.pk: "failed"}
    response = admin_client.get(
        f"{changelist(WorkflowStepExecution)}?{query.format(failed_id=ops_world.failed.pk)}"
    )
    assert response.status_code == 200
    assert {(by_id[s.execution_id], s.step_name) for s in rows(response)} == expected


# --- workflows -------------------------------------------------------------------------


def test_workflow_list_counts_versions_and_executions_without_n_plus_one(admin_client, ops_world):
    response = admin_client.get(changelist(ops_world.workflow))
    counts = {w.name: (w.version_count, w.execution_count) for w in rows(response)}
    assert counts == {"Ops flow": (1, 3), "Other flow": (1, 1)}

    with CaptureQueriesContext(connection) as few:
        admin_client.get(changelist(ops_world.workflow))
    for i in range(5):
        make_execution(make_ops_workflow(ops_world.owner, f"More {i}"), ExecutionStatus.COMPLETED)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(changelist(ops_world.workflow))
    assert len(many) == len(few)


def _post_data_from(response) -> dict[str, Any]:
    """What the browser would post back from the change form as rendered."""
    data: dict[str, Any] = {}

    def add(form: forms.BaseForm) -> None:
        for name, field in form.fields.items():
            value = form[name].value()
            key = form.add_prefix(name)
            if isinstance(field, forms.BooleanField):
                if value:
                    data[key] = "on"
            elif value is not None:
                data[key] = value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        add(inline.formset.management_form)
        for form in inline.formset.forms:
            add(form)
    return data


def test_admin_edit_of_a_step_makes_a_new_version_and_a_no_op_save_does_not(admin_client, ops_world):
    workflow = ops_world.workflow
    url = change(workflow)
    data = _post_data_from(admin_client.get(url))

    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    assert workflow.versions.count() == 1

    step_prefix = next(k[: -len("-name")] for k, v in data.items() if k.endswith("-name") and v == "shape")
    data[f"{step_prefix}-config"] = json.dumps({"template": "Edited: {{ steps.draft.output }}"})
    response = admin_client.post(url, data, follow=True)
    assert response.status_code == 200

    latest = workflow.versions.order_by("-number").first()
    assert latest.number == 2 and latest.note == "edited in admin"
    assert latest.created_by.username == "admin"
    shape = next(s for s in latest.definition["steps"] if s["name"] == "shape")
    assert shape["config"]["template"] == "Edited: {{ steps.draft.output }}"
    assert ("info", "Saved the definition as version 2.") in messages_of(response)
    # The runs keep the version they started with.
    assert WorkflowExecution.objects.get(pk=ops_world.completed.pk).version.number == 1


def test_admin_add_of_a_workflow_makes_version_one(admin_client, ops_world):
    from workflows.models import Workflow

    add_url = reverse("admin:workflows_workflow_add")
    data = _post_data_from(admin_client.get(add_url))
    data.update({
        "name": "Made in admin", "owner": ops_world.owner.pk, "is_active": "on",
        "steps-TOTAL_FORMS": "1", "steps-0-name": "only", "steps-0-order": "1", "steps-0-type": "TRANSFORM",
        "steps-0-config": json.dumps({"template": "Hello {{ input.who }}"}), "steps-0-retry_config": "{}",
        "steps-0-on_error": "fail",
        "variables-TOTAL_FORMS": "1", "variables-0-name": "who", "variables-0-type": "STRING",
        "variables-0-required": "on", "variables-0-default": "null", "variables-0-sample": '"world"',
    })
    response = admin_client.post(add_url, data)
    assert response.status_code == 302, response.context and [
        f.errors for inline in response.context["inline_admin_formsets"] for f in inline.formset.forms
    ]
    workflow = Workflow.objects.get(name="Made in admin")
    version = workflow.versions.get()
    assert version.number == 1 and version.note == "edited in admin"
    assert [s["name"] for s in version.definition["steps"]] == ["only"]


def test_admin_can_swap_two_steps_orders_and_rename_variables_crosswise(admin_client, ops_world):
    from workflows.models import Workflow, WorkflowStep, WorkflowVariable

    workflow = Workflow.objects.create(owner=ops_world.owner, name="Swappable")
    WorkflowVariable.objects.create(workflow=workflow, name="x", type="STRING", required=False, default="1")
    WorkflowVariable.objects.create(workflow=workflow, name="y", type="STRING", required=False, default="2")
    WorkflowStep.objects.create(workflow=workflow, name="a", order=1, type="TRANSFORM", config={"template": "A"})
    WorkflowStep.objects.create(workflow=workflow, name="b", order=2, type="TRANSFORM", config={"template": "B"})
    url = change(workflow)
    data = _post_data_from(admin_client.get(url))
    for key, value in list(data.items()):
        if key.startswith("steps-") and key.endswith("-order"):
            data[key] = {1: 2, 2: 1}[int(value)]
        if key.startswith("variables-") and key.endswith("-name"):
            data[key] = {"x": "y", "y": "x"}[value]

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert dict(workflow.steps.values_list("name", "order")) == {"a": 2, "b": 1}
    assert dict(workflow.variables.values_list("name", "default")) == {"x": "2", "y": "1"}
    assert [s["name"] for s in workflow.versions.order_by("-number").first().definition["steps"]] == ["b", "a"]


def test_admin_edit_that_breaks_the_definition_is_refused_with_the_engines_message(admin_client, ops_world):
    workflow = ops_world.workflow
    url = change(workflow)
    data = _post_data_from(admin_client.get(url))
    step_prefix = next(k[: -len("-name")] for k, v in data.items() if k.endswith("-name") and v == "shape")
    data[f"{step_prefix}-on_error"] = "skip_to:nowhere"

    response = admin_client.post(url, data)

    assert response.status_code == 200  # the form again, with the problem
    errors = [str(e) for inline in response.context["inline_admin_formsets"]
              for e in inline.formset.non_form_errors()]
    assert any(e.startswith('step "shape" on_error') for e in errors), errors
    assert workflow.versions.count() == 1
    assert workflow.steps.get(name="shape").on_error == "fail"


def test_workflow_page_links_versions_and_executions(admin_client, ops_world):
    html = admin_client.get(change(ops_world.workflow)).content.decode()
    assert "1 version<" in html and "3 executions<" in html
    assert f"workflow__id__exact={ops_world.workflow.pk}" in html


# --- versions ------------------------------------------------------------------------


def test_version_page_shows_pretty_definition_and_restore_button(admin_client, ops_world):
    html = admin_client.get(change(ops_world.version)).content.decode()
    assert '<pre class="pp-json"' in html and "&quot;steps&quot;: [" in html
    assert "Restore this version" in html


def test_restore_button_makes_a_new_version_with_the_old_definition(admin_client, ops_world):
    workflow = ops_world.workflow
    v1 = ops_world.version
    step = workflow.steps.get(name="shape")
    step.config = {"template": "Changed: {{ steps.draft.output }}"}
    step.save()
    from workflows.services.definitions import workflow_version_create

    workflow_version_create(workflow=workflow, note="changed")

    response = admin_client.post(
        reverse("admin:workflows_workflowversion_restore", args=[v1.pk]), follow=True
    )
    assert response.status_code == 200
    latest = workflow.versions.order_by("-number").first()
    assert latest.number == 3, messages_of(response)
    shape = next(s for s in latest.definition["steps"] if s["name"] == "shape")
    assert shape["config"] == {"template": "Result: {{ steps.draft.output }}"}
    assert any(level == "success" for level, _ in messages_of(response))


def test_restore_needs_post(admin_client, ops_world):
    url = reverse("admin:workflows_workflowversion_restore", args=[ops_world.version.pk])
    assert admin_client.get(url).status_code == 403
    assert ops_world.workflow.versions.count() == 1


# --- triggers --------------------------------------------------------------------------


def test_trigger_page_hides_secret_material(admin_client, ops_world):
    html = admin_client.get(change(ops_world.trigger)).content.decode()
    assert "0 3 * * *" in html
    assert "do-not-show-me" not in html
    assert "redacted" in html


@pytest.mark.parametrize(
    ("url_query", "expect"),
    [("type__exact=SCHEDULED", 1), ("type__exact=WEBHOOK", 0), ("is_active__exact=1", 1), ("q=Nightly", 1)],
)
def test_trigger_filters(admin_client, ops_world, url_query, expect):
    response = admin_client.get(f"{changelist(ops_world.trigger)}?{url_query}")
    assert response.status_code == 200 and len(rows(response)) == expect


@pytest.mark.parametrize(
    ("url_query", "expect"),
    [("verified__exact=1", 1), ("verified__exact=0", 0), ("trigger__type__exact=SCHEDULED", 1), ("q=nightly-1", 1)],
)
def test_invocation_filters(admin_client, ops_world, url_query, expect):
    response = admin_client.get(f"{changelist(ops_world.invocation)}?{url_query}")
    assert response.status_code == 200 and len(rows(response)) == expect


def test_admin_edit_naming_a_missing_variable_is_refused_like_the_api(admin_client, ops_world):
    workflow = ops_world.workflow
    url = change(workflow)
    data = _post_data_from(admin_client.get(url))
    step_prefix = next(k[: -len("-name")] for k, v in data.items() if k.endswith("-name") and v == "shape")
    data[f"{step_prefix}-config"] = json.dumps({"template": "Result: {{ input.topci }}"})

    response = admin_client.post(url, data)

    assert response.status_code == 200
    errors = [str(e) for inline in response.context["inline_admin_formsets"]
              for e in inline.formset.non_form_errors()]
    assert any(e.startswith('step "shape" config.template') and "input.topci" in e for e in errors), errors
    assert workflow.versions.count() == 1
    assert workflow.steps.get(name="shape").config["template"] == "Result: {{ steps.draft.output }}"


def test_admin_edit_with_a_guarded_missing_name_saves_and_shows_the_warning(admin_client, ops_world):
    workflow = ops_world.workflow
    url = change(workflow)
    data = _post_data_from(admin_client.get(url))
    step_prefix = next(k[: -len("-name")] for k, v in data.items() if k.endswith("-name") and v == "shape")
    data[f"{step_prefix}-config"] = json.dumps(
        {"template": "{% if input.tone is defined %}{{ input.tone }}{% endif %}{{ steps.draft.output }}"})

    response = admin_client.post(url, data, follow=True)

    assert response.status_code == 200
    assert workflow.versions.count() == 2
    warnings = [text for level, text in messages_of(response) if level == "warning"]
    assert any('Step "shape"' in w and "input.tone" in w for w in warnings), messages_of(response)
