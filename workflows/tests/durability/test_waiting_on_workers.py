"""Waiting runs with real processes (PostgreSQL, Redis, Celery workers and beat): a run
that waits holds no worker, no task and no transaction, and moves on once its timer or
decision arrives, whatever was restarted meanwhile."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from django.db import connection

from promptpilot.celery import app
from promptpilot.common import task_names
from workflows.models import ExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services.approvals import approval_decide
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow, probe_step

from .helpers import calls_for, step_run, wait_finished, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PERIODIC_SWEEPS = {task_names.REAP, task_names.FIRE_DUE_SCHEDULES, task_names.REDELIVER_EVENTS}


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _waiting(execution_id) -> bool:
    return WorkflowExecution.objects.filter(pk=execution_id, status=ExecutionStatus.WAITING).exists()


def test_a_delay_across_a_worker_sigkill_and_a_beat_restart_finishes_once(user, workers, beat, probe_log):
    tag = _tag()
    workflow = make_workflow(user, steps=[
        {"name": "pause", "type": "DELAY", "config": {"seconds": 5}},
        probe_step("after", f"after delay {tag}"),
    ])
    doomed = workers("delay-doomed")
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    wait_for(lambda: _waiting(execution.id), 60, "the run to park on its delay")
    doomed.kill()  # it held the timer's countdown message, unacknowledged
    beat.restart_after_kill("beat: Starting")
    workers("delay-rescuer")

    finished = wait_finished(execution.id, timeout=120)
    time.sleep(3)  # room for any duplicate timer or step message to (not) run the step again

    assert finished.status == "COMPLETED", finished.error
    assert finished.output == f"after delay {tag}"
    assert len(calls_for(probe_log, f"after delay {tag}")) == 1
    pause = step_run(execution.id, "pause")
    assert pause.status == "COMPLETED" and pause.attempt == 2  # resumed exactly once
    assert (pause.completed_at - pause.started_at).total_seconds() >= 5


def test_an_approval_decided_after_the_worker_restarted_completes(user, workers, probe_log):
    tag = _tag()
    workflow = make_workflow(user, steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Ship {{ input.what }}?"}},
        probe_step("ship", f"shipped {tag} {{{{ steps.review.output.approved }}}}"),
    ], variables=[{"name": "what", "type": "STRING"}])
    first = workers("approval-first")
    execution = execution_start(workflow=workflow, inputs={"what": "it"}, started_by=user)
    wait_for(lambda: _waiting(execution.id), 60, "the run to wait for its approval")
    first.kill()
    workers("approval-second")

    approval_decide(execution=execution, approved=True, decided_by=user.username)
    finished = wait_finished(execution.id, timeout=90)

    assert finished.status == "COMPLETED", finished.error
    assert finished.output == f"shipped {tag} True"
    assert len(calls_for(probe_log, f"shipped {tag} True")) == 1


def test_five_hundred_runs_waiting_on_approvals_hold_no_task_and_no_transaction(user, workers):
    workflow = make_workflow(user, steps=[{"name": "review", "type": "APPROVAL", "config": {"message": "Go?"}}])
    worker = workers("parked")
    ids = [execution_start(workflow=workflow, inputs={}, started_by=user).id for _ in range(500)]
    wait_for(lambda: WorkflowExecution.objects.filter(pk__in=ids, status=ExecutionStatus.WAITING).count() == 500,
             240, "500 runs to park on their approvals", interval=1)
    # Beat's periodic sweeps (the reaper every second here) may be in flight at any moment;
    # what must be absent is any task of the runs themselves. The last tasks that parked
    # runs may still be returning (acknowledging, handing back their connection) just after
    # the 500th commit: the worker must get to holding none, and stay there.
    run_tasks = {task_names.RUN_STEP, task_names.ADVANCE_EXECUTION, task_names.ADVANCE_EXECUTIONS,
                 task_names.RESUME_WAIT}
    inspect = app.control.inspect(destination=[f"parked@{worker_host()}"], timeout=10)

    # The ids a task of these runs would carry (a stray message left in the shared test
    # broker by an earlier test names rows that no longer exist: not these runs' work).
    ours = {str(i) for i in ids} | {str(pk) for pk in WorkflowStepExecution.objects.filter(
        execution_id__in=ids).values_list("pk", flat=True)}

    def tasks_held() -> list[tuple[str, str, bool]]:
        active, reserved, scheduled = inspect.active(), inspect.reserved(), inspect.scheduled()
        assert active is not None, "the worker did not answer the inspection"
        held = []
        for kind, replies in (("active", active), ("reserved", reserved), ("scheduled", scheduled)):
            for task in (task for tasks in (replies or {}).values() for task in tasks):
                task = task.get("request") or task  # scheduled entries wrap the request
                args = json.dumps(task.get("args"))
                held.append((kind, task.get("name"), any(i in args for i in ours)))
        return held

    def run_tasks_held() -> list[tuple[str, str, bool]]:
        return [entry for entry in tasks_held() if entry[1] in run_tasks and entry[2]]

    def queued() -> int:
        # Duplicate step messages the reaper re-sent while 500 runs were parking slowly
        # may still wait in the broker; each is a no-op on a parked step, but it has to
        # drain before "the worker holds nothing" means anything.
        with app.connection_for_read() as conn:
            try:
                return conn.default_channel.queue_declare(queue=app.conf.task_default_queue,
                                                          passive=True).message_count
            except conn.channel_errors:  # Redis drops an empty queue's list
                return 0

    wait_for(lambda: queued() == 0 and not run_tasks_held(), 60,
             "the broker and the worker to hold no task of the waiting runs", interval=1)
    for _ in range(3):  # and it stays so: nothing wakes a parked run but its decision
        held = tasks_held()
        assert [entry for entry in held if entry[1] in run_tasks and entry[2]] == [], held
        assert all(name in PERIODIC_SWEEPS or name in run_tasks for _, name, _ in held), held
        time.sleep(1)
    # No transaction stays open: the reaper's sweeps (every second here) are idle in
    # transaction for a moment between their statements, so what is checked is that no
    # transaction is older than a second, over several looks.
    for _ in range(5):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND state IN ('idle in transaction', 'idle in transaction (aborted)') "
                           "AND now() - xact_start > interval '1 second'")
            assert cursor.fetchone()[0] == 0
        time.sleep(0.5)
    assert worker.proc.poll() is None
    # Whatever drained meanwhile changed no parked run.
    assert WorkflowExecution.objects.filter(pk__in=ids, status=ExecutionStatus.WAITING).count() == 500
    assert WorkflowStepExecution.objects.filter(execution_id__in=ids, status="WAITING", attempt=1).count() == 500


def worker_host() -> str:
    import socket

    return socket.gethostname()


def test_a_child_run_whose_worker_is_killed_mid_step_completes_its_parent_once(user, workers, probe_log):
    tag = _tag()
    child = make_workflow(user, name="Child", steps=[probe_step("slow", f"child {tag}", delay_ms=3000)])
    parent = make_workflow(user, name="Parent", steps=[
        {"name": "call", "type": "WORKFLOW", "config": {"workflow": child.pk}},
        probe_step("after", f"parent {tag} got {{{{ steps.call.output }}}}"),
    ])
    doomed = workers("child-doomed")
    execution = execution_start(workflow=parent, inputs={}, started_by=user)
    wait_for(lambda: calls_for(probe_log, f"child {tag}"), 60, "the child's step to start")
    doomed.kill()
    workers("child-rescuer")

    finished = wait_finished(execution.id, timeout=120)
    time.sleep(3)

    assert finished.status == "COMPLETED", finished.error
    assert finished.output == f"parent {tag} got child {tag}"
    assert len(calls_for(probe_log, f"parent {tag} got child {tag}")) == 1
    assert len(calls_for(probe_log, f"child {tag}")) == 2  # the killed attempt and its re-run
    assert step_run(execution.id, "call").attempt == 2  # resumed exactly once


def test_cancelling_a_waiting_parent_cancels_its_child_on_workers(user, shared_worker, api):
    child = make_workflow(user, name="Child", steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Inner?"}}])
    parent = make_workflow(user, name="Parent", steps=[
        {"name": "call", "type": "WORKFLOW", "config": {"workflow": child.pk}}])
    execution = execution_start(workflow=parent, inputs={}, started_by=user)
    kid = wait_for(lambda: WorkflowExecution.objects.filter(parent_execution_id=execution.id,
                                                            status=ExecutionStatus.WAITING).first(),
                   60, "the child to wait on its approval")
    assert _waiting(execution.id)

    response = api.post(f"/api/executions/{execution.id}/cancel")
    assert response.status_code == 200
    kid.refresh_from_db()
    assert kid.status == "CANCELLED"
    assert api.post(f"/api/executions/{kid.id}/approve", {}, format="json").status_code == 409
