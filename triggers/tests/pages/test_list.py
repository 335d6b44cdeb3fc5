"""/triggers/: the user's triggers with workflow, type, state, last/next run and success rate."""
from __future__ import annotations

import pytest

from triggers.tests.helpers import create_trigger, customer_workflow
from workflows.models import ExecutionStatus
from workflows.services.executions import execution_start

from .helpers import flashes, text

pytestmark = pytest.mark.django_db


def _runs(trigger, *statuses):
    for status in statuses:
        execution = execution_start(workflow=trigger.workflow, inputs={"customer": "Ada"}, trigger=trigger,
                                    trigger_type=trigger.type)
        execution.status = status
        execution.save(update_fields=["status"])


def test_list_shows_each_trigger_with_its_workflow_type_state_and_success_rate(page, workflow, manual, webhook):
    _runs(manual, ExecutionStatus.COMPLETED, ExecutionStatus.COMPLETED, ExecutionStatus.COMPLETED,
          ExecutionStatus.FAILED, ExecutionStatus.PENDING)
    webhook[0].is_active = False
    webhook[0].save()
    response = page.get("/triggers/")
    assert response.status_code == 200
    body = text(response)
    assert 'href="/triggers/new"' in body and "New trigger" in body
    assert f'href="/triggers/{manual.pk}/"' in body and f'href="/triggers/{webhook[0].pk}/"' in body
    assert workflow.name in body and "Manual" in body and "Webhook" in body
    assert "75.0&nbsp;%" in body, "3 COMPLETED of 4 finished (the PENDING run does not count)"
    assert "Disabled" in body and "Active" in body
    assert "never" in body, "the webhook never fired"


def test_list_filters_by_workflow(page, user, manual):
    other = customer_workflow(user, name="Other flow")
    create_trigger(other, "MANUAL", name="Other button")
    body = text(page.get(f"/triggers/?workflow={other.pk}"))
    assert "Other button" in body and f'href="/triggers/{manual.pk}/"' not in body
    assert f'<option value="{other.pk}" selected>' in body
    body = text(page.get("/triggers/"))
    assert "Other button" in body and "Button" in body


def test_an_invalid_workflow_filter_shows_the_message(page, manual):
    response = page.get("/triggers/?workflow=abc", follow=True)
    assert response.status_code == 200
    assert any("not a workflow id" in message for message in flashes(response))
    assert "Button" in text(response)


def test_the_list_counts_rates_in_one_query(page, user, django_assert_max_num_queries):
    workflow = customer_workflow(user)
    for n in range(8):
        trigger = create_trigger(workflow, "MANUAL", name=f"t{n}")[0]
        _runs(trigger, ExecutionStatus.COMPLETED, ExecutionStatus.FAILED)
    with django_assert_max_num_queries(8):  # session, user, page count, page rows, workflows for the filter
        response = page.get("/triggers/")
    assert response.content.decode().count("50.0&nbsp;%") == 8


def test_a_schedule_shows_its_next_run(page, workflow):
    trigger, _ = create_trigger(workflow, "SCHEDULED", name="Nightly",
                                config={"cron": "0 3 * * *", "timezone": "UTC", "input": {"customer": "Ada"}})
    trigger.refresh_from_db()
    assert trigger.next_run_at is not None
    assert trigger.next_run_at.strftime("%Y-%m-%d 03:00") in text(page.get("/triggers/"))


def test_empty_list_invites_to_create(page, workflow):
    body = text(page.get("/triggers/"))
    assert "No triggers yet" in body and 'href="/triggers/new"' in body
