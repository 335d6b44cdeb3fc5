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
from django.db import connection
from django.utils import timezone

from conftest import SERVICE_TUNING
from providers.tests.fakes import FakeServer, Recorded, Reply, openai_completion
from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services.executions import execution_cancel, execution_start
from workflows.services.reaper import reaper_sweep
from workflows.tests.durability.helpers import step_run
from workflows.tests.factories import make_workflow, probe_step
from workflows.tests.support.processes import start_worker

from .helpers import (
    all_finished,
    call_counts,
    db_wait_for,
    in_flight,
    numbered_workflow,
    recovered,
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
    with pytest.raises(subprocess.TimeoutExpired):  # warm shutdown waits for the held calls...
        stopping.proc.wait(timeout=5)  # ...past the grace period (docker's default is 10 s)
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
    rescuer = workers("rescuer")  # picks the step up again once its lease expires; runs the sweeps

    finished = db_wait_for(lambda: WorkflowExecution.objects.filter(pk=execution.pk, status="FAILED").first(), 30,
                           "the run to time out")
    gate.touch()

    assert finished.error["type"] == "Timeout" and finished.error["step"] == "slow"
    late = (finished.completed_at - finished.deadline_at).total_seconds()
    assert 0 <= late < 5, f"timed out {late:.1f} s after its deadline (the reaper sweeps every second)"
    # Who noticed the deadline depends on timing: the reaper's sweep (the run still RUNNING
    # past it), or the rescuer claiming the step the reaper re-sent once its lease expired
    # (step_claim refuses a run past its deadline and times it out). Either way not the
    # dead worker: the reaper either timed the run out, or reclaimed the dead worker's lease.
    timed_out, reclaimed = recovered(rescuer, "timed_out"), recovered(rescuer, "expired_leases")
    assert timed_out == 1 or (timed_out == 0 and reclaimed >= 1), (timed_out, reclaimed)
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


def _lose_the_worker_until_the_run_fails(first, worker, workers, probe_log, prompt: str):
    """SIGKILL the worker each time the step's call starts (a restart after each, as a
    supervisor does) until the reaper gives up on the step (``WorkerLost``)."""
    kills = 0

    def failed() -> bool:
        return WorkflowExecution.objects.filter(pk=first.pk, status="FAILED").exists()

    while not failed():
        db_wait_for(lambda k=kills: failed() or call_counts(probe_log, [prompt])[prompt] > k, 30,
                    f"attempt {kills + 1} of the step to start")
        if failed():
            break
        worker.kill()
        kills += 1
        worker = workers(f"supervised-{kills}")
    return kills


@pytest.mark.parametrize("ending", ["cancelled", "timed_out", "worker_lost"])
def test_a_capped_runs_abnormal_end_frees_its_slot_for_the_next_queued_run(
        ending, user, workers, probe_log, tmp_path):
    t = tag()
    gate = tmp_path / "answer-now"
    limits = {"timeout_seconds": 5} if ending == "timed_out" else {}
    workflow = numbered_workflow(user, [probe_step("hold", f"hold {t} {{{{ input.n }}}}", delay_ms=HOLD_MS,
                                                   hold_until=gate)], max_concurrent_executions=1, **limits)
    worker = workers("capped")
    first, queued = start_runs(user, workflow, 2)
    db_wait_for(lambda: call_counts(probe_log, [f"hold {t} 0"])[f"hold {t} 0"], 30, "the first run's call")
    assert WorkflowExecution.objects.get(pk=queued.pk).status == "PENDING", "the cap holds the second run back"

    if ending == "cancelled":
        execution_cancel(execution=first, user=user)
    elif ending == "worker_lost":
        kills = _lose_the_worker_until_the_run_fails(first, worker, workers, probe_log, f"hold {t} 0")
        assert kills == int(SERVICE_TUNING["PROMPTPILOT_MAX_LOST_ATTEMPTS"])
    # (timed_out: the reaper fails the run at its deadline)

    db_wait_for(lambda: call_counts(probe_log, [f"hold {t} 1"])[f"hold {t} 1"], 30,
                "the queued run to start once the slot is free")
    first.refresh_from_db()
    expected = {"cancelled": ("CANCELLED", "Cancelled"), "timed_out": ("FAILED", "Timeout"),
                "worker_lost": ("FAILED", "WorkerLost")}[ending]
    assert (first.status, first.error["type"]) == expected
    gate.touch()
    [done] = all_finished([queued], timeout=30)
    assert done.status == "COMPLETED" and done.output == f"hold {t} 1"
    assert done.started_at >= first.completed_at, "never two runs at once"


def test_two_reapers_sweeping_the_same_expired_leases_at_once_recover_each_step_once(
        user, workers, beat, probe_log, tmp_path):
    t = tag()
    runs_count = 40
    gate = tmp_path / "answer-now"
    workflow = numbered_workflow(user, [probe_step("held", f"held {t} {{{{ input.n }}}}", delay_ms=HOLD_MS,
                                                   hold_until=gate)])
    doomed = workers("lost-with-forty")
    prompts = [f"held {t} {i}" for i in range(runs_count)]
    runs = start_runs(user, workflow, runs_count)
    db_wait_for(lambda: in_flight(probe_log, prompts) == runs_count, 60, "every step in flight")

    beat.signal_group(signal.SIGSTOP)  # only the two sweeps below may reclaim these leases
    reports, errors = [], []
    try:
        doomed.kill()
        steps = WorkflowStepExecution.objects.filter(execution__in=runs)
        db_wait_for(lambda: not steps.filter(lease_expires_at__gte=timezone.now()).exists(), 3 * LEASE,
                    "every lease to expire")
        barrier = threading.Barrier(2)

        def sweep() -> None:
            try:
                barrier.wait(10)
                reports.append(reaper_sweep())
            except Exception as exc:  # the assertion below shows it
                errors.append(exc)
            finally:
                connection.close()

        sweepers = [threading.Thread(target=sweep) for _ in range(2)]
        for sweeper in sweepers:
            sweeper.start()
        for sweeper in sweepers:
            sweeper.join(60)
    finally:
        beat.signal_group(signal.SIGCONT)

    assert errors == [] and len(reports) == 2
    assert sum(report.expired_leases for report in reports) == runs_count, reports
    assert {(s.status, s.attempt, s.lost_attempts) for s in steps} == {("PENDING", 2, 1)}, \
        "each lost attempt was recovered once"

    gate.touch()
    workers("rescuer")
    finished = all_finished(runs, timeout=60)
    assert [run.status for run in finished] == ["COMPLETED"] * runs_count
    assert call_counts(probe_log, prompts) == dict.fromkeys(prompts, 2), "the lost call, then one re-run"
