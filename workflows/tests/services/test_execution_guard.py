"""``execution_start(guard=...)``: the database re-checks a caller's cached state in the
statement that writes the execution (the webhook receiver's fast path relies on it)."""
from __future__ import annotations

import pytest
from django.db import IntegrityError, connection

from workflows.models import Workflow, WorkflowExecution
from workflows.services.executions import WorkflowGuard, execution_start
from workflows.tests.factories import make_workflow

pytestmark = [pytest.mark.django_db, pytest.mark.single_pass]  # reaches no fast-statement branch

ACTIVE_WORKFLOW = f'(SELECT id FROM {Workflow._meta.db_table} WHERE id = %s AND is_active)'


def _workflow(user) -> Workflow:
    return make_workflow(user, steps=[{"name": "s", "type": "TRANSFORM", "config": {"template": "x"}}])


def test_a_guard_that_still_holds_writes_the_run_and_enqueues_it(user, broker_messages,
                                                                 django_capture_on_commit_callbacks):
    sent = broker_messages()
    workflow = _workflow(user)
    with django_capture_on_commit_callbacks(execute=True):
        run = execution_start(workflow=workflow, inputs={}, guard=WorkflowGuard(ACTIVE_WORKFLOW, (workflow.pk,)))
    stored = WorkflowExecution.objects.get(pk=run.pk)
    assert stored.workflow_id == workflow.pk and stored.status == "PENDING"
    assert str(run.pk) in str(sent), sent


def test_a_guard_that_no_longer_holds_writes_nothing_and_sends_nothing(user, broker_messages,
                                                                       django_capture_on_commit_callbacks):
    sent = broker_messages()
    workflow = _workflow(user)
    stale = Workflow(pk=workflow.pk, name=workflow.name, is_active=True)  # as a cache remembers it
    Workflow.objects.filter(pk=workflow.pk).update(is_active=False)  # changed since
    with pytest.raises(IntegrityError), django_capture_on_commit_callbacks(execute=True):
        execution_start(workflow=stale, inputs={}, guard=WorkflowGuard(ACTIVE_WORKFLOW, (workflow.pk,)))
    assert WorkflowExecution.objects.count() == 0 and sent == []
    with connection.cursor() as cursor:  # the connection is still usable
        cursor.execute("SELECT 1")
