"""The needs-attention rule (``attention_selectors``): one test per reason, and what
keeps a run or delivery off the list (plain failures, dismissal, a retry, other owners)."""
from __future__ import annotations

import pytest

from workflows.attention_selectors import (
    AttentionReason,
    attention_count,
    attention_counts,
    attention_executions_for,
    attention_invocations_for,
    executions_needing_attention,
)
from workflows.models import WorkflowExecution
from workflows.services.attention import execution_dismiss
from workflows.services.executions import execution_retry
from workflows.tests.run_pages.helpers import echo_workflow, make_run

from .helpers import (
    failed_run,
    plain_failed_run,
    rejected_invocation,
    retries_exhausted_run,
    timed_out_run,
    worker_lost_run,
)

pytestmark = pytest.mark.django_db


def _reasons(queryset=None) -> dict[str, str]:
    return {str(run.pk): run.attention_reason for run in executions_needing_attention(queryset)}


def test_a_run_whose_worker_was_lost_too_often_needs_attention_as_worker_lost(user):
    run = worker_lost_run(echo_workflow(user))
    assert run.status == "FAILED" and run.error["type"] == "WorkerLost"
    assert _reasons() == {str(run.pk): AttentionReason.WORKER_LOST}


def test_a_timed_out_run_needs_attention_as_timeout(user):
    run = timed_out_run(echo_workflow(user))
    assert run.error["type"] == "Timeout"
    assert _reasons() == {str(run.pk): AttentionReason.TIMEOUT}


def test_a_run_that_used_every_retry_needs_attention_as_retries_exhausted(user):
    run = retries_exhausted_run(echo_workflow(user), max_retries=2)
    assert _reasons() == {str(run.pk): AttentionReason.RETRIES_EXHAUSTED}


def test_a_rejected_trigger_delivery_needs_attention(user):
    invocation = rejected_invocation(echo_workflow(user))
    assert invocation.status == "REJECTED"
    found = list(attention_invocations_for(user))
    assert [i.pk for i in found] == [invocation.pk]
    assert found[0].attention_reason == AttentionReason.TRIGGER_REJECTED


def test_plain_failures_completed_and_cancelled_runs_do_not(user):
    flow = echo_workflow(user)
    plain_failed_run(flow)
    make_run(flow, status="COMPLETED", steps=[{"name": "step_1"}])
    make_run(flow, status="CANCELLED", error={"type": "Cancelled", "message": "by ops"})
    # Retries left (1 of 3 used) when it failed: not exhausted.
    failed_run(flow, retry_count=1, max_retries=3)
    assert _reasons() == {}
    assert attention_count(user) == 0


def test_a_dismissed_run_leaves_the_list_for_good(user):
    run = timed_out_run(echo_workflow(user))
    execution_dismiss(execution=run, user=user)
    assert _reasons() == {}
    run.refresh_from_db()
    assert run.attention_dismissed_at is not None and run.attention_dismissed_by == user


def test_a_retried_run_is_handled_and_a_retry_that_fails_the_same_way_comes_back(user):
    run = retries_exhausted_run(echo_workflow(user))
    retry = execution_retry(execution=run, user=user)
    assert _reasons() == {}
    WorkflowExecution.objects.filter(pk=retry.pk).update(status="FAILED", error={"type": "Timeout", "message": "late"})
    assert _reasons() == {str(retry.pk): AttentionReason.TIMEOUT}


def test_owners_count_their_own_staff_count_all(user, other_user, django_user_model):
    timed_out_run(echo_workflow(user))
    rejected_invocation(echo_workflow(user, name="Mine"))
    worker_lost_run(echo_workflow(other_user, name="Theirs"))
    staff = django_user_model.objects.create_user(username="ops", password="x", is_staff=True)
    assert attention_count(user) == 2
    assert attention_count(other_user) == 1
    assert attention_count(staff) == 3
    assert attention_executions_for(other_user).get().error["type"] == "WorkerLost"
    assert attention_counts() == {"WORKER_LOST": 1, "RETRIES_EXHAUSTED": 0, "TIMEOUT": 1, "TRIGGER_REJECTED": 1}
