"""Durability with real processes: PostgreSQL, Redis, Celery workers and beat (the reaper).

Each test names the failure it survives. Provider calls are counted across processes by
the probe provider's shared call log.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import SERVICE_TUNING
from workflows.models import WorkflowExecution
from workflows.services.executions import execution_start
from workflows.services.workflows import workflow_update
from workflows.tests.factories import make_workflow, probe_step
from workflows.tests.support.processes import ROOT

from .helpers import calls_for, deliver_step_task, step_run, wait_finished, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def test_step_task_delivered_again_and_to_two_workers_calls_provider_once(user, workers, probe_log):
    workers("dup-a")
    workers("dup-b")
    tag = _tag()
    workflow = make_workflow(user, steps=[probe_step("only", f"dup {tag}", delay_ms=1500)])

    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    running = wait_for(lambda: (s := step_run(execution.id, "only")) and s.status == "RUNNING" and s, 20,
                       "the step to be claimed")
    # Two more deliveries of the same attempt at once: one per worker, while the first runs.
    deliver_step_task(running)
    deliver_step_task(running)
    finished = wait_finished(execution.id)
    deliver_step_task(running)  # and a late one after the step completed
    time.sleep(2)

    assert finished.status == "COMPLETED"
    assert finished.output == f"dup {tag}"
    assert len(calls_for(probe_log, f"dup {tag}")) == 1


def test_worker_killed_during_step_two_resumes_on_new_worker_without_rerunning_step_one(user, workers, probe_log):
    tag = _tag()
    workflow = make_workflow(
        user,
        steps=[
            probe_step("first", f"one {tag}"),
            probe_step("second", f"two {tag}", delay_ms=3000),
            probe_step("third", "{{ steps.first.output }} + {{ steps.second.output }}"),
        ],
    )
    doomed = workers("doomed")
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    wait_for(lambda: calls_for(probe_log, f"two {tag}"), 30, "step 2 to start")
    doomed.kill()  # SIGKILL to the whole worker: main process and pool children

    started = time.monotonic()
    workers("rescuer")
    finished = wait_finished(execution.id, timeout=60)

    assert time.monotonic() - started < 60
    assert finished.status == "COMPLETED", finished.error
    assert finished.output == f"one {tag} + two {tag}"
    assert len(calls_for(probe_log, f"one {tag}")) == 1, "step 1 must not run again"
    assert len(calls_for(probe_log, f"two {tag}")) == 2
    second = step_run(execution.id, "second")
    assert second.lost_attempts == 1 and second.attempt == 2


def test_frozen_worker_past_its_lease_cannot_overwrite_the_attempt_that_replaced_it(user, workers, probe_log):
    tag = _tag()
    workflow = make_workflow(user, steps=[probe_step("slow", f"slow {tag}", delay_ms=5000)])
    frozen = workers("frozen")
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    wait_for(lambda: calls_for(probe_log, f"slow {tag}"), 30, "the first attempt to start")
    frozen.signal_group(signal.SIGSTOP)
    try:
        workers("healthy")
        finished = wait_finished(execution.id, timeout=60)
        assert finished.status == "COMPLETED"
        assert step_run(execution.id, "slow").attempt == 2
    finally:
        frozen.signal_group(signal.SIGCONT)

    # The frozen worker wakes up, finishes attempt 1 and is refused at the checkpoint.
    wait_for(lambda: any("Late result of attempt 1" in w for w in step_run(execution.id, "slow").warnings), 30,
             "the late result to be rejected")
    step = step_run(execution.id, "slow")
    assert step.status == "COMPLETED" and step.attempt == 2
    assert len(calls_for(probe_log, f"slow {tag}", event="done")) == 2
    assert WorkflowExecution.objects.get(pk=execution.id).status == "COMPLETED"


def test_execution_accepted_while_broker_is_down_is_recovered_by_the_sweep(user, workers, service_env):
    tag = _tag()
    workflow = make_workflow(user, steps=[probe_step("only", f"outage {tag}")])
    script = (
        "from django.contrib.auth import get_user_model;"
        "from workflows.models import Workflow;"
        "from workflows.services.executions import execution_start;"
        f"w = Workflow.objects.get(pk={workflow.pk});"
        "e = execution_start(workflow=w, inputs={}, started_by=w.owner);"
        "print('EXECUTION', e.id)"
    )
    env = {**service_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}  # nothing listens there
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    execution_id = done.stdout.split("EXECUTION", 1)[1].split()[0]
    assert WorkflowExecution.objects.get(pk=execution_id).status == "PENDING"

    workers("after-outage")
    finished = wait_finished(execution_id, timeout=60)
    assert finished.status == "COMPLETED"
    assert finished.output == f"outage {tag}"


def test_workflow_edited_mid_run_finishes_on_its_pinned_version(user, workers):
    workflow = make_workflow(
        user,
        steps=[
            probe_step("first", "alpha", delay_ms=2500),
            {"name": "second", "type": "TRANSFORM", "config": {"template": "v1: {{ steps.first.output }}"}},
        ],
    )
    workers("pinned")
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    wait_for(lambda: (s := step_run(execution.id, "first")) and s.status == "RUNNING", 20, "step 1 to run")
    workflow_update(
        workflow=workflow,
        user=user,
        data={"steps": [
            probe_step("first", "alpha"),
            {"name": "second", "type": "TRANSFORM", "order": 2, "config": {"template": "v2: {{ steps.first.output }}"}},
        ]},
    )
    finished = wait_finished(execution.id)
    assert finished.status == "COMPLETED"
    assert finished.output == "v1: alpha"
    assert finished.version.number == 1

    again = wait_finished(execution_start(workflow=workflow, inputs={}, started_by=user).id)
    assert again.output == "v2: alpha" and again.version.number == 2


def test_step_that_kills_its_worker_every_time_fails_as_worker_lost_after_the_cap(user, workers, probe_log):
    """A step that kills the process running it (a crashing library, the OOM killer) takes
    down one of the default worker's pool processes each time; the worker replaces the
    process (promptpilot/common/worker_pool.py), and the run still ends instead of looping
    forever."""
    tag = _tag()
    workflow = make_workflow(user, steps=[probe_step("poison", f"poison {tag}", provider="crash")])
    worker = workers("victim")
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    finished = wait_finished(execution.id, timeout=90)

    assert finished.status == "FAILED"
    assert finished.error["type"] == "WorkerLost"
    assert finished.error["step"] == "poison"
    step = step_run(execution.id, "poison")
    assert step.status == "FAILED" and step.lost_attempts == int(SERVICE_TUNING["PROMPTPILOT_MAX_LOST_ATTEMPTS"])
    assert len(calls_for(probe_log, f"poison {tag}")) == step.lost_attempts
    assert worker.proc.poll() is None, "the worker itself stayed up"
    assert worker.log().count("worker_pool.child_died") == step.lost_attempts, (
        "each attempt killed one pool process; none was tried again after the cap")
