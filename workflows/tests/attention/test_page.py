"""/attention/: the reason and links per item, retry and dismiss buttons (POST + CSRF),
refusals as messages, the empty state, the nav count; ownership (404 for another user's
id), staff see all, anonymous users are sent to log in."""
from __future__ import annotations

import pytest
from django.test import Client

from triggers.models import TriggerInvocation
from workflows.models import WorkflowExecution
from workflows.tests.run_pages.helpers import echo_workflow, flashes, text

from .helpers import rejected_invocation, retries_exhausted_run, timed_out_run, worker_lost_run

pytestmark = pytest.mark.django_db


def _rows(response) -> dict[str, str]:
    return {str(item["object"].pk): item["reason"].value for item in response.context["items"]}


def test_the_page_lists_each_item_with_its_reason_and_links(page, user):
    lost = worker_lost_run(echo_workflow(user, name="Digest"))
    late = timed_out_run(echo_workflow(user, name="Report"))
    spent = retries_exhausted_run(echo_workflow(user, name="Mailer"))
    rejected = rejected_invocation(echo_workflow(user, name="Hooked"), name="Inbound")
    response = page.get("/attention/")
    assert response.status_code == 200
    assert _rows(response) == {str(lost.pk): "WORKER_LOST", str(late.pk): "TIMEOUT",
                               str(spent.pk): "RETRIES_EXHAUSTED", str(rejected.pk): "TRIGGER_REJECTED"}
    body = text(response)
    for label in ("Worker lost (recovery exhausted)", "Timed out", "Failed after all retries", "Rejected by a trigger"):
        assert label in body
    assert f'href="/executions/{lost.pk}/"' in body and f'action="/executions/{lost.pk}/retry"' in body
    assert f'href="/triggers/{rejected.trigger_id}/"' in body and "Trigger Inbound" in body
    assert f'action="/attention/invocations/{rejected.pk}/dismiss"' in body
    assert "exceeded its workflow&#x27;s timeout" in body or "exceeded its workflow's timeout" in body
    assert 'data-testid="nav-attention">Needs attention <span class="badge badge-failed">4</span>' in body


def test_the_empty_state_and_no_count_in_the_nav(page, user):
    response = page.get("/attention/")
    body = text(response)
    assert 'data-testid="attention-empty"' in body and "Nothing needs attention" in body
    assert 'data-testid="nav-attention">Needs attention</a>' in body


def test_dismiss_takes_a_run_off_the_list_and_a_second_dismiss_is_refused_with_a_message(page, user):
    run = timed_out_run(echo_workflow(user))
    response = page.post(f"/attention/executions/{run.pk}/dismiss", follow=True)
    assert response.redirect_chain[-1][0] == "/attention/"
    assert flashes(response) == ["Dismissed: it no longer needs attention."]
    assert _rows(response) == {}
    run.refresh_from_db()
    assert run.attention_dismissed_by == user
    again = page.post(f"/attention/executions/{run.pk}/dismiss", follow=True)
    assert again.status_code == 200
    assert flashes(again)[0].startswith("Not dismissed: This run is not on the needs-attention list")


def test_dismiss_a_rejected_delivery(page, user):
    invocation = rejected_invocation(echo_workflow(user))
    response = page.post(f"/attention/invocations/{invocation.pk}/dismiss", follow=True)
    assert _rows(response) == {}
    assert TriggerInvocation.objects.get(pk=invocation.pk).attention_dismissed_at is not None


def test_retry_from_the_page_starts_a_new_run_and_the_old_one_leaves_the_list(page, user):
    run = retries_exhausted_run(echo_workflow(user))
    response = page.post(f"/executions/{run.pk}/retry", follow=True)
    retry = WorkflowExecution.objects.get(retry_of=run)
    assert response.redirect_chain[-1][0] == f"/executions/{retry.pk}/"
    assert retry.metadata["resume_from"] == "step_2"
    assert _rows(page.get("/attention/")) == {}


def test_another_users_ids_answer_404_and_change_nothing(other_page, user):
    run = timed_out_run(echo_workflow(user))
    invocation = rejected_invocation(echo_workflow(user, name="Hooked"))
    assert other_page.post(f"/attention/executions/{run.pk}/dismiss").status_code == 404
    assert other_page.post(f"/attention/invocations/{invocation.pk}/dismiss").status_code == 404
    assert _rows(other_page.get("/attention/")) == {}
    run.refresh_from_db()
    invocation.refresh_from_db()
    assert run.attention_dismissed_at is None and invocation.attention_dismissed_at is None


def test_staff_see_everyones_items_with_the_owner(staff_page, user, other_user):
    mine = timed_out_run(echo_workflow(user))
    theirs = worker_lost_run(echo_workflow(other_user, name="Theirs"))
    response = staff_page.get("/attention/")
    assert set(_rows(response)) == {str(mine.pk), str(theirs.pk)}
    assert "<th>Owner</th>" in text(response)
    assert staff_page.post(f"/attention/executions/{theirs.pk}/dismiss").status_code == 302


def test_anonymous_users_are_sent_to_log_in_and_get_requests_cannot_dismiss(page, user):
    run = timed_out_run(echo_workflow(user))
    anonymous = Client()
    for path in ("/attention/", f"/attention/executions/{run.pk}/dismiss"):
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert page.get(f"/attention/executions/{run.pk}/dismiss").status_code == 405


def test_dismiss_needs_the_csrf_token(user):
    run = timed_out_run(echo_workflow(user))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(f"/attention/executions/{run.pk}/dismiss").status_code == 403
    run.refresh_from_db()
    assert run.attention_dismissed_at is None
