"""The workflow list: search, last run, success rate, runs in the last 24 h, empty states."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from workflows.models import WorkflowExecution
from workflows.tests.factories import make_workflow

from .helpers import text

pytestmark = pytest.mark.django_db

STEP = {"name": "only", "type": "TRANSFORM", "config": {"template": "hi"}}


def _run(workflow, status: str, *, hours_ago: float = 0) -> WorkflowExecution:
    execution = WorkflowExecution.objects.create(workflow=workflow, version=workflow.latest_version, status=status)
    if hours_ago:
        WorkflowExecution.objects.filter(pk=execution.pk).update(
            created_at=timezone.now() - timedelta(hours=hours_ago))
    return execution


def _row(body: str, workflow) -> str:
    start = body.index(f'data-workflow="{workflow.pk}"')
    return body[start:body.index("</tr>", start)]


def test_a_row_shows_last_run_success_rate_and_runs_in_the_last_day(page, flow):
    _run(flow, "COMPLETED", hours_ago=48)
    _run(flow, "COMPLETED", hours_ago=30)
    _run(flow, "FAILED", hours_ago=2)
    _run(flow, "RUNNING")  # the latest, unfinished: not in the success rate
    row = _row(text(page.get("/workflows/")), flow)
    assert "badge-running" in row  # last run status
    assert "66.7&nbsp;% <span class=\"muted\">of 3</span>" in row
    assert 'data-testid="runs-24h">2<' in row
    assert ">2<" in row and ">v1<" in row  # steps and version


def test_a_workflow_never_run_says_so(page, flow):
    row = _row(text(page.get("/workflows/")), flow)
    assert "never run" in row and 'data-testid="runs-24h">0<' in row


def test_the_list_is_one_query_whatever_the_number_of_workflows(page, user, flow, django_assert_max_num_queries):
    for index in range(8):
        workflow = make_workflow(user, name=f"Flow {index}", steps=[dict(STEP)])
        _run(workflow, "COMPLETED")
        _run(workflow, "FAILED")
    # session, user, count (paginator), the rows; nothing per row.
    with django_assert_max_num_queries(5):
        response = page.get("/workflows/")
    assert text(response).count("data-workflow=") == 9


def test_search_matches_name_or_description(page, user, flow):
    make_workflow(user, name="Invoice chaser", steps=[dict(STEP)])
    body = text(page.get("/workflows/", {"q": "invoice"}))
    assert "Invoice chaser" in body and "Summarise ticket" not in body
    body = text(page.get("/workflows/", {"q": "support tickets"}))  # in the description
    assert "Summarise ticket" in body and "Invoice chaser" not in body
    body = text(page.get("/workflows/", {"q": "nothing like this"}))
    assert "No workflow matches" in body and "Show all workflows" in body


def test_the_empty_list_says_what_to_do_next(page):
    body = text(page.get("/workflows/"))
    assert "No workflows yet" in body
    assert 'href="/workflows/new"' in body and "Create your first workflow" in body
