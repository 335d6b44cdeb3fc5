"""Chaos: the broker (Redis) and the database (PostgreSQL) restarted under runs in flight.

Both are the suite's private instances (scripts/run_chaos.py). Redis runs without
persistence, so a restart loses every message it held: the database is the guarantee.
"""
from __future__ import annotations

import pytest

from workflows.models import WorkflowStepExecution
from workflows.tests.factories import probe_step

from .helpers import all_finished, call_counts, db_wait_for, in_flight, numbered_workflow, recovered, start_runs, tag

pytestmark = [pytest.mark.chaos, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RUNS = 50


def test_redis_restarted_three_times_with_fifty_runs_in_flight_completes_all_and_calls_each_step_once(
        user, workers, probe_log, restart_redis, tmp_path):
    t = tag()
    gate = tmp_path / "answer-now"
    workflow = numbered_workflow(user, [
        probe_step("first", f"one {t} {{{{ input.n }}}}", delay_ms=60_000, hold_until=gate),
        probe_step("second", f"two {t} {{{{ input.n }}}}", delay_ms=200),
        probe_step("third", f"three {t} {{{{ input.n }}}}"),
    ])
    # Ten threads for fifty runs: the other forty wait as messages in Redis.
    worker = workers("through-restarts", "--concurrency", "10")
    firsts = [f"one {t} {i}" for i in range(RUNS)]
    seconds = [f"two {t} {i}" for i in range(RUNS)]
    runs = start_runs(user, workflow, RUNS)
    db_wait_for(lambda: in_flight(probe_log, firsts) == 10, 60, "ten first steps in flight")

    restart_redis()  # the queued messages and the unacked ones of the steps in flight are gone
    reconnected = worker.log().count("Connected to")
    db_wait_for(lambda: worker.log().count("Connected to") > reconnected, 30, "the worker to reconnect")
    restart_redis()  # and again at once: Redis flapping while the worker had just reconnected
    gate.touch()
    db_wait_for(lambda: sum(call_counts(probe_log, seconds).values()) >= 15, 60, "more second steps to start")
    restart_redis()  # again, with other runs' messages queued

    finished = all_finished(runs, timeout=120, alive=[worker])  # the worker rides out every restart

    assert [run.status for run in finished] == ["COMPLETED"] * RUNS, [r.error for r in finished if r.error]
    assert [run.output for run in finished] == [f"three {t} {i}" for i in range(RUNS)]
    prompts = firsts + seconds + [f"three {t} {i}" for i in range(RUNS)]
    repeated = {p: n for p, n in call_counts(probe_log, prompts).items() if n != 1}
    assert repeated == {}, "each step's model call happens once per completed step"
    resent = recovered(worker, "steps_resent") + recovered(worker, "executions_resent")
    assert resent > 0, "the restarts lost queued messages, and the sweeps sent them again"


def test_postgres_restarted_during_checkpoints_completes_all_with_every_completed_step_holding_its_output(
        user, workers, probe_log, restart_postgres):
    t = tag()
    workflow = numbered_workflow(user, [
        probe_step(f"s{k}", f"s{k} {t} {{{{ input.n }}}}", delay_ms=300) for k in range(1, 4)
    ])
    workers("through-pg-restarts")
    runs = start_runs(user, workflow, 30)
    completed = lambda: WorkflowStepExecution.objects.filter(  # noqa: E731
        execution__in=runs, status="COMPLETED").count()
    for at_least in (10, 35, 60):  # three restarts, each while steps are being checkpointed
        db_wait_for(lambda n=at_least: completed() >= n, 90, f"{at_least} steps checkpointed")
        restart_postgres()

    finished = all_finished(runs, timeout=120)

    assert [run.status for run in finished] == ["COMPLETED"] * 30, [r.error for r in finished if r.error]
    assert [run.output for run in finished] == [f"s3 {t} {i}" for i in range(30)]
    steps = WorkflowStepExecution.objects.filter(execution__in=runs)
    assert steps.count() == 90
    without_output = [(s.execution_id, s.step_name) for s in steps if s.status != "COMPLETED" or not s.output]
    assert without_output == [], "a COMPLETED step always holds its output"
    for step in steps:
        n = step.execution.input["n"]
        assert step.output == f"{step.step_name} {t} {n}"
