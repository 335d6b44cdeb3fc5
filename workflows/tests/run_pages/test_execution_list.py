"""/executions/: filters by workflow, status, trigger type and date range, pagination that
keeps the filters, and empty states that say what to do next."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from workflows.models import WorkflowExecution
from workflows.pages.executions import PAGE_SIZE
from workflows.tests.run_pages.helpers import echo_workflow, make_run, text

pytestmark = pytest.mark.django_db


def _ids(response) -> set[str]:
    return {str(e.pk) for e in response.context["executions"]}


def test_the_list_shows_runs_newest_first_with_their_facts(page, user):
    flow = echo_workflow(user, name="Digest")
    older = make_run(flow, status="COMPLETED", steps=[{"name": "step_1", "seconds": 2}],
                     aggregate_tokens={"input": 3, "output": 4, "total": 7})
    newer = make_run(flow, status="FAILED", error={"type": "TemplateError", "message": "'nmae' is undefined",
                                                   "step": "step_1"})
    response = page.get("/executions/")
    assert response.status_code == 200
    assert [e.pk for e in response.context["executions"]] == [newer.pk, older.pk]
    body = text(response)
    assert f'href="/executions/{older.pk}/"' in body
    assert "2000&nbsp;ms" in body and ">7<" in body
    assert "&#x27;nmae&#x27; is undefined" in body
    assert older.created_at.strftime("%Y-%m-%d %H:%M:%S") in body  # to the second


def test_filters_by_workflow_status_and_trigger_type(page, user):
    first, second = echo_workflow(user, name="First"), echo_workflow(user, name="Second")
    done = make_run(first, status="COMPLETED")
    failed = make_run(first, status="FAILED")
    other = make_run(second, status="COMPLETED", trigger_type="WEBHOOK")

    assert _ids(page.get(f"/executions/?workflow={first.pk}")) == {str(done.pk), str(failed.pk)}
    assert _ids(page.get("/executions/?status=COMPLETED")) == {str(done.pk), str(other.pk)}
    assert _ids(page.get("/executions/?trigger_type=WEBHOOK")) == {str(other.pk)}
    assert _ids(page.get(f"/executions/?workflow={first.pk}&status=FAILED")) == {str(failed.pk)}
    # The form keeps what was chosen.
    body = text(page.get(f"/executions/?workflow={first.pk}&status=FAILED"))
    assert f'<option value="{first.pk}" selected>' in body and '<option value="FAILED" selected>' in body


def test_filters_by_date_range_both_days_included(page, user):
    flow = echo_workflow(user)
    runs = {day: make_run(flow, status="COMPLETED") for day in (1, 2, 3)}
    for day, run in runs.items():
        WorkflowExecution.objects.filter(pk=run.pk).update(
            created_at=timezone.make_aware(datetime(2026, 11, day, 23, 59, 30)))
    response = page.get("/executions/?created_from=2026-11-02&created_to=2026-11-03")
    assert _ids(response) == {str(runs[2].pk), str(runs[3].pk)}
    assert _ids(page.get("/executions/?created_to=2026-11-01")) == {str(runs[1].pk)}
    assert _ids(page.get("/executions/?created_from=2026-11-03")) == {str(runs[3].pk)}


@pytest.mark.parametrize("query, field", [
    ("status=DONE", "status"), ("trigger_type=FAX", "trigger_type"), ("workflow=abc", "workflow"),
    ("created_from=yesterday", "created_from"), ("created_from=2026-11-05&created_to=2026-11-01", "created_to"),
])
def test_an_invalid_filter_is_explained_next_to_it_and_ignored(page, user, query, field):
    run = make_run(echo_workflow(user), status="COMPLETED")
    response = page.get(f"/executions/?{query}")
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert 'class="field-error"' in text(response)
    if field != "created_to":
        assert _ids(response) == {str(run.pk)}


def test_pagination_keeps_the_filters(page, user):
    flow = echo_workflow(user)
    other = echo_workflow(user, name="Other")
    for _ in range(PAGE_SIZE + 3):
        make_run(flow, status="COMPLETED")
    make_run(other, status="COMPLETED")
    first = page.get(f"/executions/?workflow={flow.pk}")
    assert len(first.context["executions"]) == PAGE_SIZE
    body = text(first)
    assert f"workflow={flow.pk}&amp;page=2" in body and f"{PAGE_SIZE + 3} runs" in body
    second = page.get(f"/executions/?workflow={flow.pk}&page=2")
    assert len(second.context["executions"]) == 3
    assert not _ids(first) & _ids(second)
    assert page.get("/executions/?page=999").status_code == 200  # past the end: the last page


def test_empty_state_without_workflows_says_to_create_one(page):
    body = text(page.get("/executions/"))
    assert 'data-testid="empty"' in body and "Create a workflow first" in body
    assert 'href="/workflows/new"' in body


def test_empty_state_with_workflows_says_how_to_start_a_run(page, user):
    echo_workflow(user)
    body = text(page.get("/executions/"))
    assert "No runs yet" in body and 'href="/workflows/"' in body and 'href="/triggers/"' in body


def test_empty_state_for_filters_offers_to_clear_them(page, user):
    make_run(echo_workflow(user), status="COMPLETED")
    body = text(page.get("/executions/?status=CANCELLED"))
    assert "No runs match these filters" in body and "Show all runs" in body


def test_the_list_runs_a_bounded_number_of_queries(page, user, django_assert_max_num_queries):
    flow = echo_workflow(user)
    for _ in range(10):
        make_run(flow, status="COMPLETED", steps=[{"name": "step_1"}])
    with django_assert_max_num_queries(8):
        page.get("/executions/")


def test_running_duration_and_pending_dash(page, user):
    flow = echo_workflow(user)
    make_run(flow, status="RUNNING", started_at=timezone.now() - timedelta(seconds=5))
    make_run(flow)
    body = text(page.get("/executions/"))
    assert "running</span>" in body and "PENDING" in body
