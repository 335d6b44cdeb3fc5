"""The admin's needs-attention filter (runs and deliveries), its retry and dismiss
actions, and the counts on the admin index."""
from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from triggers.models import TriggerInvocation
from workflows.models import WorkflowExecution
from workflows.tests.run_pages.helpers import echo_workflow, make_run

from .helpers import plain_failed_run, rejected_invocation, retries_exhausted_run, timed_out_run, worker_lost_run

pytestmark = pytest.mark.django_db

EXECUTIONS = "/admin/workflows/workflowexecution/"
INVOCATIONS = "/admin/triggers/triggerinvocation/"


def _shown(response) -> set[str]:
    return {str(obj.pk) for obj in response.context["cl"].result_list}


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def world(user):
    flow = echo_workflow(user)
    return {
        "lost": worker_lost_run(flow), "late": timed_out_run(flow), "spent": retries_exhausted_run(flow),
        "plain": plain_failed_run(flow), "done": make_run(flow, status="COMPLETED", steps=[{"name": "step_1"}]),
        "rejected": rejected_invocation(echo_workflow(user, name="Hooked")),
    }


def test_the_execution_filter_by_reason_and_any(admin_client, world):
    ids = {name: str(obj.pk) for name, obj in world.items()}
    assert _shown(admin_client.get(EXECUTIONS, {"attention": "any"})) == {ids["lost"], ids["late"], ids["spent"]}
    assert _shown(admin_client.get(EXECUTIONS, {"attention": "WORKER_LOST"})) == {ids["lost"]}
    assert _shown(admin_client.get(EXECUTIONS, {"attention": "TIMEOUT"})) == {ids["late"]}
    assert _shown(admin_client.get(EXECUTIONS, {"attention": "RETRIES_EXHAUSTED"})) == {ids["spent"]}
    assert ids["plain"] in _shown(admin_client.get(EXECUTIONS))  # unfiltered: every run


def test_the_invocation_filter_shows_rejected_deliveries(admin_client, world, user):
    accepted = world["rejected"].trigger.invocations.create(status="ACCEPTED", verified=True)
    response = admin_client.get(INVOCATIONS, {"attention": "TRIGGER_REJECTED"})
    assert _shown(response) == {str(world["rejected"].pk)}
    assert str(accepted.pk) in _shown(admin_client.get(INVOCATIONS))


def test_dismiss_action_on_runs_reports_each_and_refuses_those_not_on_the_list(admin_client, world):
    response = admin_client.post(EXECUTIONS, {
        "action": "dismiss_executions", "index": "0",
        "_selected_action": [str(world["late"].pk), str(world["plain"].pk)],
    }, follow=True)
    assert response.status_code == 200
    notes = _messages(response)
    assert f"Execution {world['late'].pk}: dismissed." in notes
    assert any(n.startswith(f"Execution {world['plain'].pk}: This run is not on the needs-attention list")
               for n in notes)
    assert WorkflowExecution.objects.get(pk=world["late"].pk).attention_dismissed_at is not None
    assert WorkflowExecution.objects.get(pk=world["plain"].pk).attention_dismissed_at is None
    assert _shown(admin_client.get(EXECUTIONS, {"attention": "any"})) == {str(world["lost"].pk),
                                                                          str(world["spent"].pk)}


def test_retry_from_the_failed_step_action_starts_a_retry_that_takes_the_run_off_the_list(admin_client, world):
    response = admin_client.post(EXECUTIONS, {
        "action": "retry_executions", "index": "0", "_selected_action": [str(world["spent"].pk)],
    }, follow=True)
    retry = WorkflowExecution.objects.get(retry_of=world["spent"])
    assert retry.metadata["resume_from"] == "step_2"
    assert any("retried as" in n for n in _messages(response))
    assert str(world["spent"].pk) not in _shown(admin_client.get(EXECUTIONS, {"attention": "any"}))


def test_dismiss_action_on_deliveries(admin_client, world):
    admin_client.post(INVOCATIONS, {"action": "dismiss_invocations", "index": "0",
                                    "_selected_action": [str(world["rejected"].pk)]}, follow=True)
    assert TriggerInvocation.objects.get(pk=world["rejected"].pk).attention_dismissed_at is not None
    assert _shown(admin_client.get(INVOCATIONS, {"attention": "TRIGGER_REJECTED"})) == set()


def test_the_admin_index_counts_by_reason_with_links_to_the_filter(admin_client, world):
    body = admin_client.get("/admin/").content.decode()
    assert 'data-testid="attention-summary"' in body and "Needs attention (4)" in body
    for reason, changelist in (("WORKER_LOST", EXECUTIONS), ("TIMEOUT", EXECUTIONS),
                               ("RETRIES_EXHAUSTED", EXECUTIONS), ("TRIGGER_REJECTED", INVOCATIONS)):
        row = body.split(f'data-reason="{reason}"')[1].split("</tr>")[0]
        assert f'href="{changelist}?attention={reason}"' in row and ">1</td>" in row
    assert "Site administration" in body or "app-workflows" in body  # the usual index still follows
