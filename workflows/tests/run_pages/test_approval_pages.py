"""Approvals on the pages: the execution page's approve / reject form (owner only), the
Awaiting approval list, and the page a signed link opens (driven in a real browser)."""
from __future__ import annotations

import re

import pytest
from django.test import Client

from workflows.models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

pytestmark = pytest.mark.django_db(transaction=True)

FORM = [{"name": "reason", "type": "STRING", "required": True}, {"name": "urgent", "type": "BOOLEAN",
                                                                 "required": False}]


@pytest.fixture
def sent(monkeypatch, settings):
    return capture_broker(monkeypatch, settings)


def _waiting_run(owner, sent, name="Refunds") -> WorkflowExecution:
    workflow = make_workflow(owner, name=name, variables=[{"name": "order", "type": "NUMBER"}], steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Refund order {{ input.order }}?", "form": FORM}},
        {"name": "done", "type": "TRANSFORM", "config": {
            "template": "{{ steps.review.output.approved }} {{ steps.review.output.data.reason }}"}},
    ])
    run = execution_start(workflow=workflow, inputs={"order": 42}, started_by=owner)
    drive(sent)
    return run


def _review(run) -> WorkflowStepExecution:
    return WorkflowStepExecution.objects.get(execution=run, step_name="review")


def test_the_owner_sees_the_message_the_form_and_the_link_and_the_page_stops_polling(page, user, sent):
    run = _waiting_run(user, sent)
    html = page.get(f"/executions/{run.pk}/").content.decode()
    assert "Refund order 42?" in html and 'data-testid="approval-form"' in html
    assert 'name="review-data_reason"' in html and 'name="review-data_urgent"' in html
    assert 'name="review-comment"' in html
    assert re.search(r"http://testserver/approvals/#[\w:.-]+", html)
    assert "hx-trigger" not in html  # a refresh would wipe what the owner types
    assert page.get(f"/executions/{run.pk}/live").status_code == 286


def test_approving_on_the_page_moves_the_run_on(page, user, sent):
    run = _waiting_run(user, sent)
    response = page.post(f"/executions/{run.pk}/approve", {"step": "review", "review-comment": "ok",
                                                            "review-data_reason": "damaged", "review-data_urgent": "on"})
    assert response.status_code == 302
    review = _review(run)
    assert review.output["approved"] is True and review.output["data"] == {"reason": "damaged", "urgent": True}
    drive(sent)
    run.refresh_from_db()
    assert run.status == ExecutionStatus.COMPLETED and run.output == "True damaged"
    assert "approved; the run goes on" in page.get(f"/executions/{run.pk}/").content.decode()


def test_a_missing_required_field_is_named_and_nothing_is_decided(page, user, sent):
    run = _waiting_run(user, sent)
    response = page.post(f"/executions/{run.pk}/reject", {"step": "review"}, follow=True)
    assert "Not rejected: reason: is required" in response.content.decode()
    assert _review(run).status == StepExecutionStatus.WAITING


def test_rejecting_twice_is_explained(page, user, sent):
    run = _waiting_run(user, sent)
    page.post(f"/executions/{run.pk}/reject", {"step": "review", "review-data_reason": "no"})
    response = page.post(f"/executions/{run.pk}/reject", {"step": "review", "review-data_reason": "no"}, follow=True)
    assert "Not rejected: No approval step" in response.content.decode()


def test_another_user_gets_404_and_staff_see_but_do_not_decide(other_page, user, sent, django_user_model):
    run = _waiting_run(user, sent)
    assert other_page.get(f"/executions/{run.pk}/").status_code == 404
    assert other_page.post(f"/executions/{run.pk}/approve", {"step": "review"}).status_code == 404
    staff = Client()
    staff.force_login(django_user_model.objects.create_user(username="ops", password="pw-ops-123", is_staff=True))
    html = staff.get(f"/executions/{run.pk}/").content.decode()
    assert "Only the run's owner decides." in html and "/approvals/#" not in html
    assert staff.post(f"/executions/{run.pk}/approve", {"step": "review"}).status_code == 404
    assert _review(run).status == StepExecutionStatus.WAITING


def test_the_awaiting_approval_list_shows_only_my_waiting_approvals(page, user, other_user, sent):
    mine = _waiting_run(user, sent, name="Mine")
    _waiting_run(other_user, sent, name="Theirs")
    html = page.get("/executions/awaiting-approval/").content.decode()
    assert "Mine" in html and "Refund order 42?" in html and "Theirs" not in html
    assert f"/executions/{mine.pk}/" in html
    page.post(f"/executions/{mine.pk}/approve", {"step": "review", "review-data_reason": "x"})
    assert 'data-testid="empty"' in page.get("/executions/awaiting-approval/").content.decode()


def test_the_awaiting_list_needs_a_login(client):
    assert client.get("/executions/awaiting-approval/").status_code == 302


@pytest.mark.browser
def test_a_signed_link_opens_and_decides_in_a_browser_without_an_account(user, sent, live_server):
    from playwright.sync_api import sync_playwright

    run = _waiting_run(user, sent)
    owner = Client()
    owner.force_login(user)
    link = re.search(r"http://testserver(/approvals/#[\w:.-]+)", owner.get(f"/executions/{run.pk}/").content.decode())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            tab = browser.new_page()
            tab.goto(live_server.url + link.group(1))
            tab.get_by_test_id("approval-message").wait_for()
            assert tab.get_by_test_id("approval-message").inner_text() == "Refund order 42?"
            tab.fill("#field-reason", "wrong size")
            tab.fill("#approval-name", "Sam")
            tab.get_by_test_id("reject").click()
            tab.get_by_text("Rejected. Thank you").wait_for()
            tab.reload()
            tab.get_by_text("used already").wait_for()
        finally:
            browser.close()
    review = _review(run)
    assert review.output["approved"] is False and review.output["decided_by"] == "link: Sam"
    assert review.output["data"] == {"reason": "wrong size", "urgent": False}
