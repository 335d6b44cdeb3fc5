"""The worker runtime with real processes: many step attempts at once in one default worker
(`celery -A promptpilot worker`, no flags), a bounded number of PostgreSQL connections
while they wait, and the durability rules unchanged at that scale: SIGKILL with a hundred
steps in flight, SIGTERM (warm shutdown) with steps in flight, a provider's 429 storm.

Provider calls are counted across processes by the probe provider's shared call log.
"""
from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from providers.tests.fakes import FakeServer, Recorded, Reply, openai_completion
from workflows.models import WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow, probe_step
from workflows.tests.support.processes import start_worker

from .helpers import calls_for, wait_finished, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

IN_FLIGHT = 100
# Held calls answer when the test creates their gate file, or after this long.
HOLD_MS = 60_000


def _tag() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def worker_connections_sampled() -> Iterator[list[int]]:
    """Samples, every 20 ms, the PostgreSQL connections that worker processes hold (their
    connections are labelled ``promptpilot worker <name> pid <pid>`` in pg_stat_activity):
    each sample is ``{label: connections}``."""
    db = connection.settings_dict
    counts: list[dict[str, int]] = []
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             dbname=db["NAME"], autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute("SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s"
                                    " AND application_name LIKE 'promptpilot worker%%' GROUP BY 1",
                                    [db["NAME"]]).fetchall()
                counts.append(dict(rows))
                stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield counts
    finally:
        stop.set()
        sampler.join(5)


def _in_flight(probe_log, prompts: list[str]) -> int:
    """How many of ``prompts`` have a call started and not yet done."""
    started = {c["prompt"] for c in calls_for_any(probe_log, "call")}
    done = {c["prompt"] for c in calls_for_any(probe_log, "done")}
    return sum(1 for p in prompts if p in started and p not in done)


def calls_for_any(probe_log, event: str) -> list[dict]:
    from workflows.tests.support.providers import read_calls

    return [c for c in read_calls(probe_log) if c["event"] == event]


def _start_runs(user, workflow, n: int) -> list:
    return [execution_start(workflow=workflow, inputs={"n": i}, started_by=user) for i in range(n)]


def _numbered_workflow(user, steps: list[dict]):
    return make_workflow(user, steps=steps, variables=[{"name": "n", "type": "NUMBER", "required": True}])


def _second_step_held(user, tag: str, gate):
    """Step "first" answers at once; "second" waits for the ``gate`` file (a minute at most)."""
    return _numbered_workflow(user, [
        probe_step("first", f"one {tag} {{{{ input.n }}}}"),
        probe_step("second", f"two {tag} {{{{ input.n }}}}", delay_ms=HOLD_MS, hold_until=gate),
    ])


def test_one_default_worker_runs_a_hundred_waiting_steps_at_once_on_a_few_connections(
        user, workers, probe_log, tmp_path):
    tag = _tag()
    gate = tmp_path / "answer-now"  # the calls wait for it (a minute at most)
    workflow = _numbered_workflow(user, [probe_step("wait", f"wait {tag} {{{{ input.n }}}}", delay_ms=HOLD_MS,
                                                    hold_until=gate)])
    worker = workers("many")
    prompts = [f"wait {tag} {i}" for i in range(IN_FLIGHT)]

    with worker_connections_sampled() as counts:
        executions = _start_runs(user, workflow, IN_FLIGHT)
        wait_for(lambda: _in_flight(probe_log, prompts) == IN_FLIGHT, 50, f"{IN_FLIGHT} calls in flight at once")
        gate.touch()
        finished = [wait_finished(e.id, timeout=60) for e in executions]

    assert [run.status for run in finished] == ["COMPLETED"] * IN_FLIGHT
    # One worker: its pool processes (one per core) made every call.
    processes = settings.PROMPTPILOT["WORKER_PROCESSES"]
    callers = {c["pid"] for c in calls_for_any(probe_log, "call") if c["prompt"] in prompts}
    assert callers <= worker.task_pids() and len(callers) == processes
    pool_size = settings.PROMPTPILOT["DB_POOL"]["max_size"]
    per_process = max(n for sample in counts for n in sample.values())
    assert per_process <= pool_size, f"a worker process held {per_process} connections (pool of {pool_size})"
    total = max(sum(sample.values()) for sample in counts)
    assert 1 <= total <= pool_size * processes, f"the worker held {total} connections in all"


def test_worker_killed_with_a_hundred_steps_in_flight_loses_none_and_repeats_no_completed_call(
        user, workers, probe_log, tmp_path):
    tag = _tag()
    gate = tmp_path / "answer-now"
    workflow = _second_step_held(user, tag, gate)
    doomed = workers("doomed-many")
    seconds = [f"two {tag} {i}" for i in range(IN_FLIGHT)]
    executions = _start_runs(user, workflow, IN_FLIGHT)
    wait_for(lambda: _in_flight(probe_log, seconds) == IN_FLIGHT, 50, f"{IN_FLIGHT} second steps in flight")
    doomed.kill()  # SIGKILL: every attempt in flight is lost with the process
    gate.touch()  # the re-runs answer at once

    workers("rescuer-many")
    finished = [wait_finished(e.id, timeout=90) for e in executions]

    assert [run.status for run in finished] == ["COMPLETED"] * IN_FLIGHT, [r.error for r in finished if r.error]
    assert [run.output for run in finished] == seconds
    for i in range(IN_FLIGHT):
        assert len(calls_for(probe_log, f"one {tag} {i}")) == 1, "a completed step is never called again"
        assert len(calls_for(probe_log, f"two {tag} {i}")) == 2, "the lost attempt, then its one re-run"
    lost = WorkflowStepExecution.objects.filter(execution__in=executions, step_name="second")
    assert {(s.attempt, s.lost_attempts) for s in lost} == {(2, 1)}


def test_a_pool_process_killed_mid_step_is_replaced_and_its_attempts_run_again_elsewhere(
        user, workers, probe_log, tmp_path):
    """One of the worker's processes dies (the OOM killer, a segfault): the worker stays up,
    the attempts it held come back and run once more, and a new process takes its place."""
    runs = 20
    tag = _tag()
    gate = tmp_path / "answer-now"
    workflow = _second_step_held(user, tag, gate)
    worker = workers("loses-a-process")
    seconds = [f"two {tag} {i}" for i in range(runs)]
    executions = _start_runs(user, workflow, runs)
    wait_for(lambda: _in_flight(probe_log, seconds) == runs, 30, "every second step in flight")
    callers = {c["pid"] for c in calls_for_any(probe_log, "call") if c["prompt"] in seconds}
    victim = min(callers)
    assert victim != worker.pid, "the worker's own process runs no step"
    held_by_victim = {c["prompt"] for c in calls_for_any(probe_log, "call")
                      if c["prompt"] in seconds and c["pid"] == victim}
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "worker_pool.child_died" in worker.log(), 20, "the worker to notice its dead process")
    gate.touch()

    finished = [wait_finished(e.id, timeout=90) for e in executions]
    assert [run.status for run in finished] == ["COMPLETED"] * runs, [r.error for r in finished if r.error]
    assert worker.proc.poll() is None, "the worker itself stayed up"
    assert victim not in worker.task_pids() and len(worker.task_pids()) == settings.PROMPTPILOT["WORKER_PROCESSES"]
    for i in range(runs):
        assert len(calls_for(probe_log, f"one {tag} {i}")) == 1, "a completed step is never called again"
        expected = 2 if f"two {tag} {i}" in held_by_victim else 1
        assert len(calls_for(probe_log, f"two {tag} {i}")) == expected


def test_warm_shutdown_lets_steps_in_flight_finish_and_hands_the_rest_over(user, workers, probe_log):
    runs = 20
    tag = _tag()
    workflow = _numbered_workflow(user, [
        probe_step("first", f"one {tag} {{{{ input.n }}}}", delay_ms=2500),
        probe_step("second", f"two {tag} {{{{ input.n }}}}"),
    ])
    stopping = workers("stopping")
    firsts = [f"one {tag} {i}" for i in range(runs)]
    executions = _start_runs(user, workflow, runs)
    wait_for(lambda: _in_flight(probe_log, firsts) == runs, 20, "every first step in flight")

    stopping.proc.send_signal(signal.SIGTERM)  # warm shutdown: what docker stop and systemd send
    assert stopping.proc.wait(timeout=30) == 0
    # Everything in flight finished and was checkpointed before the process exited...
    first_steps = WorkflowStepExecution.objects.filter(execution__in=executions, step_name="first")
    assert {(s.status, s.attempt) for s in first_steps} == {("COMPLETED", 1)}
    # ...and what follows waits, durable, for the next worker.
    workers("successor")
    finished = [wait_finished(e.id, timeout=60) for e in executions]
    assert [run.status for run in finished] == ["COMPLETED"] * runs
    for prompt in firsts:
        assert len(calls_for(probe_log, prompt)) == 1


def test_a_providers_429_storm_backs_off_without_holding_the_threads_other_providers_need(
        user, service_env, tmp_path, beat):
    def answer(request: Recorded) -> Reply:
        if request.json["model"] == "storm":
            return Reply(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                         headers={"retry-after": "3"})
        return Reply(200, openai_completion(f"calm {request.json['messages'][-1]['content']}"))

    server = FakeServer(default=answer)
    env = {**service_env, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"{server.url}/v1"}
    # Few threads, so that backoffs that slept in them would starve the calm runs.
    worker = start_worker(f"storm-{_tag()}", env, tmp_path, "--concurrency", "4")
    try:
        retry = {"max_retries": 2, "backoff_base_seconds": 1, "jitter": False}
        storm = _numbered_workflow(user, [{"name": "ask", "type": "PROMPT", "retry_config": retry, "config": {
            "template": "storm {{ input.n }}", "model": {"provider": "openai", "model": "storm"}}}])
        calm = _numbered_workflow(user, [{"name": "ask", "type": "PROMPT", "config": {
            "template": "calm {{ input.n }}", "model": {"provider": "openai", "model": "calm"}}}])
        stormy = _start_runs(user, storm, 12)
        wait_for(lambda: sum(1 for r in server.requests if r.json["model"] == "storm") >= 4, 20, "the storm")
        calm_runs = _start_runs(user, calm, 8)

        calm_done = [wait_finished(e.id, timeout=30) for e in calm_runs]
        storm_done = [wait_finished(e.id, timeout=60) for e in stormy]
    finally:
        worker.stop()
        server.close()

    assert [run.status for run in calm_done] == ["COMPLETED"] * 8
    assert max(run.completed_at for run in calm_done) < min(run.completed_at for run in storm_done), \
        "the calm runs finished while the storm's retries waited as countdowns, not in threads"
    assert [run.status for run in storm_done] == ["FAILED"] * 12
    assert {run.error["type"] for run in storm_done} == {"RateLimited"}
    steps = WorkflowStepExecution.objects.filter(execution__in=stormy)
    assert {s.retry_count for s in steps} == {2}
