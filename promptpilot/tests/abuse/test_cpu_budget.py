"""Renders have a time budget checked inside the sandbox: a template that burns CPU while
staying inside every size limit fails with a TemplateError, in previews (the web tier's
setting) and on workers (the step's and the workflow's timeout_seconds)."""
from __future__ import annotations

import time

import pytest
from django.conf import settings

from workflows.engine.errors import TemplateError
from workflows.engine.templating import evaluate_expression, render
from workflows.models import WorkflowExecution
from workflows.tests.durability.helpers import step_run, wait_finished
from workflows.tests.factories import make_workflow

from .burners import SORT_IN_A_LOOP

# The burners run for minutes; anything near this means the budget stopped them.
STOPPED_WELL_BEFORE = 20.0


def test_a_cpu_burning_render_stops_at_its_budget():
    began = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render(SORT_IN_A_LOOP, {}, max_seconds=0.5)
    assert time.monotonic() - began < STOPPED_WELL_BEFORE
    assert caught.value.details["reason"] == "timeout"
    assert "time budget of 0.5 s" in caught.value.message


def test_a_deadline_already_past_stops_the_render_at_once():
    with pytest.raises(TemplateError) as caught:
        render(SORT_IN_A_LOOP, {}, deadline=time.monotonic())
    assert caught.value.details["reason"] == "timeout"


def test_a_deadline_that_runs_out_names_the_budget_it_stands_for():
    """A step's timeout of 5 s is what the builder set: the message says 5 s, not the 4.9 s
    left of it when the render began."""
    with pytest.raises(TemplateError) as caught:
        render(SORT_IN_A_LOOP, {}, deadline=time.monotonic() + 0.3, deadline_seconds=5)
    assert caught.value.details["reason"] == "timeout"
    assert "time budget of 5 s" in caught.value.message


def test_an_expression_past_its_deadline_stops():
    expression = "range(10000)|map('string')|sort|list|length > 0"
    assert evaluate_expression(expression, {}, max_seconds=30) is True
    with pytest.raises(TemplateError) as caught:
        evaluate_expression(expression, {}, deadline=time.monotonic())
    assert caught.value.details["reason"] == "timeout"


def test_a_render_inside_its_budget_is_untouched():
    assert render("{{ (range(100)|map('string')|sort)[0] }}", {}, max_seconds=5) == "0"


@pytest.mark.django_db
def test_a_preview_stops_a_cpu_burning_step_at_the_preview_budget(api, user):
    workflow = make_workflow(user, steps=[{"name": "burn", "type": "TRANSFORM", "config": {"template": SORT_IN_A_LOOP}}])
    began = time.monotonic()
    response = api.post(f"/api/workflows/{workflow.pk}/preview", {"input": {}}, format="json")
    assert time.monotonic() - began < STOPPED_WELL_BEFORE
    assert response.status_code == 200, response.content
    step = response.json()["steps"][0]
    assert step["status"] == "FAILED"
    budget = settings.PROMPTPILOT["TEMPLATE_PREVIEW_MAX_SECONDS"]
    assert f"time budget of {budget:g} s" in step["error"]["message"], step["error"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_step_timeout_stops_a_cpu_burning_template_on_the_worker(api, user, shared_worker):
    workflow = make_workflow(user, steps=[
        {"name": "burn", "type": "TRANSFORM", "timeout_seconds": 5, "config": {"template": SORT_IN_A_LOOP}},
    ])
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {}}, format="json")
    assert response.status_code == 202, response.content
    finished = wait_finished(response.json()["id"], timeout=180)
    assert finished.status == "FAILED"
    step = step_run(finished.id, "burn")
    assert step.status == "FAILED"
    assert step.error["type"] == "TemplateError"
    assert "time budget of 5 s" in step.error["message"], step.error
    # The worker is free again: the next run completes.
    quick = make_workflow(user, name="quick", steps=[{"name": "hi", "type": "TRANSFORM", "config": {"template": "hi"}}])
    response = api.post(f"/api/workflows/{quick.pk}/execute", {"input": {}}, format="json")
    assert wait_finished(response.json()["id"], timeout=120).status == "COMPLETED"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_workflow_timeout_stops_a_cpu_burning_template_on_the_worker(api, user, shared_worker):
    workflow = make_workflow(user, timeout_seconds=5, steps=[
        {"name": "burn", "type": "TRANSFORM", "config": {"template": SORT_IN_A_LOOP}},
    ])
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {}}, format="json")
    finished = wait_finished(response.json()["id"], timeout=180)
    assert finished.status == "FAILED"
    assert finished.error["type"] in ("Timeout", "TemplateError"), finished.error
    # The step itself stopped (not left burning a worker thread behind a FAILED run).
    step = WorkflowExecution.objects.get(pk=finished.id).step_executions.get(step_name="burn")
    assert step.status in ("FAILED", "CANCELLED")
    quick = make_workflow(user, name="quick", steps=[{"name": "hi", "type": "TRANSFORM", "config": {"template": "hi"}}])
    response = api.post(f"/api/workflows/{quick.pk}/execute", {"input": {}}, format="json")
    assert wait_finished(response.json()["id"], timeout=120).status == "COMPLETED"
