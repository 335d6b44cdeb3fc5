"""Chaos: workers stopped or killed mid-step, cancels during a model call, capped
workflows whose runs end abnormally, and two reapers sweeping the same expired leases.

Real worker and beat processes on the private PostgreSQL and Redis; provider calls are
counted across processes by the probe provider's shared call log (or a fake HTTP server).
"""
from __future__ import annotations

import signal
import subprocess
import threading

import pytest

from conftest import SERVICE_TUNING
from providers.tests.fakes import FakeServer, Recorded, Reply, openai_completion
from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.durability.helpers import step_run
from workflows.tests.factories import make_workflow, probe_step
from workflows.tests.support.processes import start_worker

from .helpers import (
    all_finished,
    call_counts,
    db_wait_for,
    in_flight,
    numbered_workflow,
    start_runs,
    tag,
    wait_for_sweeps,
)

pytestmark = [pytest.mark.chaos, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LEASE = float(SERVICE_TUNING["PROMPTPILOT_STEP_LEASE_SECONDS"])
HOLD_MS = 60_000  # held calls answer when the test creates their gate file, or after this long


def test_sigterm_then_sigkill_after_the_grace_finishes_short_steps_and_re_runs_the_held_one_once(
        user, workers, probe_log, tmp_path):
    """``docker stop``: SIGTERM, then SIGKILL when the grace period ends. Steps that end
    within the grace are checkpointed and never run again; one still in flight at the
    SIGKILL is re-run once by the next worker; what was queued is handed over."""
    t = tag()
    gate = tmp_path / "answer-now"
    short = numbered_workflow(user, [probe_step("first", f"short {t} {{{{ input.n }}}}", delay_ms=1500),
                                     probe_step("second", f"after-short {t} {{{{ input.n }}}}")])
    held = numbered_workflow(user, [probe_step("first", f"held {t} {{{{ input.n }}}}", delay_ms=HOLD_MS,
                                               hold_until=gate),
                                    probe_step("second", f"after-held {t} {{{{ input.n }}}}")])
    stopping = workers("stopped-by-docker")
    shorts = [f"short {t} {i}" for i in range(10)]
    helds = [f"held {t} {i}" for i in range(2)]
    runs = start_runs(user, short, 10) + start_runs(user, held, 2)
    db_wait_for(lambda: in_flight(probe_log, shorts + helds) == 12, 30, "every first step in flight")

    stopping.proc.send_signal(signal.SIGTERM)
    try:
        stopping.proc.wait(timeout=5)  # the grace period (docker's default is 10 s)
    except subprocess.TimeoutExpired:
        stopping.kill()  # what docker does next
    first_steps = WorkflowStepExecution.objects.filter(execution__in=runs[:10], step_name="first")
    assert {(s.status, s.attempt) for s in first_steps} == {("COMPLETED", 1)}, "short steps finished in the grace"

    gate.touch()
    workers("successor")
    finished = all_finished(runs, timeout=60)

    assert [run.status for run in finished] == ["COMPLETED"] * 12, [r.error for r in finished if r.error]
    calls = call_counts(probe_log, shorts + helds + [f"after-short {t} {i}" for i in range(10)]
                        + [f"after-held {t} {i}" for i in range(2)])
    assert {p: n for p, n in calls.items() if n != 1} == dict.fromkeys(helds, 2), \
        "only the steps cut off by the SIGKILL run again, once each"
    re_run = WorkflowStepExecution.objects.filter(execution__in=runs[10:], step_name="first")
    assert {(s.attempt, s.lost_attempts) for s in re_run} == {(2, 1)}


def test_workflow_timeout_holds_when_the_worker_running_its_step_is_sigkilled(user, workers, probe_log, tmp_path):
    t = tag()
    gate = tmp_path / "answer-now"
    workflow = make_workflow(user, timeout_seconds=5, steps=[
        probe_step("slow", f"slow {t}", delay_ms=HOLD_MS, hold_until=gate),
        probe_step("after", f"after {t}"),
    ])
    doomed = workers("crashes")
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    db_wait_for(lambda: call_counts(probe_log, [f"slow {t}"])[f"slow {t}"], 30, "the step's call to start")
    doomed.kill()
    workers("rescuer")  # picks the step up again once its lease expires

    finished = db_wait_for(lambda: WorkflowExecution.objects.filter(pk=execution.pk, status="FAILED").first(), 30,
                           "the run to time out")
    gate.touch()

    assert finished.error["type"] == "Timeout" and finished.error["step"] == "slow"
    late = (finished.completed_at - finished.deadline_at).total_seconds()
    assert 0 <= late < 4, f"timed out {late:.1f} s after its deadline (the reaper sweeps every second)"
    assert step_run(execution.id, "slow").status == "CANCELLED"
    assert step_run(execution.id, "after") is None
    assert call_counts(probe_log, [f"after {t}"])[f"after {t}"] == 0


def test_cancel_while_the_model_call_is_in_flight_cancels_the_step_and_calls_no_later_step(
        user, api, service_env, tmp_path, beat):
    answer_now = threading.Event()

    def answer(request: Recorded) -> Reply:
        prompt = request.json["messages"][-1]["content"]
        if prompt.startswith("first"):
            answer_now.wait(30)
        return Reply(200, openai_completion(f"answer to {prompt}"))

    server = FakeServer(default=answer)
    env = {**service_env, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{server.url}/v1"}
    worker = start_worker(f"cancel-{tag()}", env, tmp_path)
    try:
        model = {"provider": "openai", "model": "gpt-4o-mini"}
        workflow = make_workflow(user, steps=[
            {"name": "ask", "type": "PROMPT", "config": {"template": "first question", "model": model}},
            {"name": "follow_up", "type": "PROMPT",
             "config": {"template": "second: {{ steps.ask.output }}", "model": model}},
        ])
        execution = execution_start(workflow=workflow, inputs={}, started_by=user)
        db_wait_for(lambda: server.requests, 30, "the model call to reach the provider")

        response = api.post(f"/api/executions/{execution.id}/cancel", format="json")
        assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
        answer_now.set()  # the call in flight answers after the cancel
        db_wait_for(lambda: "discarded" in " ".join(step_run(execution.id, "ask").warnings), 30,
                    "the late answer to be discarded")
        wait_for_sweeps(worker, 2)  # sweeps that would resend a next step, had one been made
    finally:
        worker.stop()
        server.close()

    assert WorkflowExecution.objects.get(pk=execution.pk).status == "CANCELLED"
    step = step_run(execution.id, "ask")
    assert step.status == "CANCELLED" and step.output is None
    assert step_run(execution.id, "follow_up") is None
    assert [r.json["messages"][-1]["content"] for r in server.requests] == ["first question"]
