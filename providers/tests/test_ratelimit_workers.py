"""A provider's shared concurrency limit holds across two real worker processes (Redis)."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from providers import ratelimit
from providers.models import ProviderLimit
from providers.ratelimit import KEY_PREFIX, Limit
from providers.tests.support_limited import LOG_ENV, NAME, read_log
from workflows.models import WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.durability.helpers import wait_finished
from workflows.tests.factories import make_workflow
from workflows.tests.support.processes import ServiceProcess, start_worker, stop_all

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CALL_MS = 300
RUNS = 6


@pytest.fixture
def limit_log(tmp_path) -> Path:
    return tmp_path / "limited-calls.jsonl"


@pytest.fixture
def limited_workers(service_env, tmp_path, beat, limit_log) -> Iterator[Callable[[str], ServiceProcess]]:
    """Like the root ``workers`` fixture, with the slow limited provider loaded and logging."""
    env = {
        **service_env,
        "PROMPTPILOT_PROVIDER_MODULES": f"{service_env['PROMPTPILOT_PROVIDER_MODULES']},providers.tests.support_limited",
        LOG_ENV: str(limit_log),
    }
    started: list[ServiceProcess] = []

    def start(name: str, *pool_args: str) -> ServiceProcess:
        process = start_worker(f"{name}-{uuid.uuid4().hex[:6]}", env, tmp_path, *pool_args)
        started.append(process)
        return process

    yield start
    stop_all(started)


@pytest.fixture
def clean_limit_keys(broker_url) -> Iterator[None]:
    client = redis.Redis.from_url(broker_url)

    def clean() -> None:
        for key in client.scan_iter(f"{KEY_PREFIX}{{{NAME}}}:*"):
            client.delete(key)

    clean()
    yield
    clean()
    client.close()


def test_max_concurrency_one_is_never_exceeded_across_two_workers(user, limited_workers, limit_log, clean_limit_keys):
    ProviderLimit.objects.create(provider=NAME, max_concurrency=1)
    workflow = make_workflow(user, steps=[{
        "name": "ask", "type": "PROMPT",
        "config": {"template": "run {{ input.n }}", "model": {"provider": NAME, "model": "slow-1", "delay_ms": CALL_MS}},
    }], variables=[{"name": "n", "type": "NUMBER", "required": True}])
    first, second = limited_workers("limit-a"), limited_workers("limit-b")

    executions = [execution_start(workflow=workflow, inputs={"n": n}, started_by=user) for n in range(RUNS)]
    finished = [wait_finished(execution.id, timeout=90) for execution in executions]

    assert [run.status for run in finished] == ["COMPLETED"] * RUNS, [run.error for run in finished]
    entries = read_log(limit_log)
    starts = {e["call"]: e for e in entries if e["event"] == "start"}
    ends = {e["call"]: e for e in entries if e["event"] == "end"}
    assert len(starts) == RUNS and set(starts) == set(ends)
    calls = sorted((starts[call]["t"], ends[call]["t"], starts[call]["pid"]) for call in starts)
    for (_, previous_end, _), (next_start, _, _) in zip(calls, calls[1:], strict=False):
        assert next_start >= previous_end, f"two calls overlapped: {calls}"
    # Both workers called the provider: the limit held across processes, not just within one.
    callers = {pid for _, _, pid in calls}
    calling_workers = [w.pid for w in (first, second) if w.task_pids() & callers]
    assert len(calling_workers) == 2, f"only one worker made calls: {calls} (workers {first.pid}, {second.pid})"


def test_steps_waiting_for_a_full_budget_hold_no_thread_so_other_providers_steps_go_on(
        user, limited_workers, limit_log, clean_limit_keys):
    """Four threads, eight steps queued behind a budget someone else holds: had they waited
    in their threads (up to RATE_LIMIT_MAX_WAIT_SECONDS), the calm runs could not start."""
    ProviderLimit.objects.create(provider=NAME, max_concurrency=1)
    backend = ratelimit.get_backend()
    assert backend.try_acquire(NAME, Limit(max_concurrency=1), "held-by-the-test", 120).acquired
    limited_workflow = make_workflow(user, steps=[{
        "name": "ask", "type": "PROMPT",
        "config": {"template": "run {{ input.n }}", "model": {"provider": NAME, "model": "slow-1", "delay_ms": CALL_MS}},
    }], variables=[{"name": "n", "type": "NUMBER", "required": True}])
    calm_workflow = make_workflow(user, steps=[{
        "name": "ask", "type": "PROMPT", "config": {"template": "calm {{ input.n }}",
                                                    "model": {"provider": "echo", "model": "echo"}},
    }], variables=[{"name": "n", "type": "NUMBER", "required": True}])
    limited_workers("few-threads", "--concurrency", "4")

    try:
        limited = [execution_start(workflow=limited_workflow, inputs={"n": n}, started_by=user) for n in range(8)]
        calm = [execution_start(workflow=calm_workflow, inputs={"n": n}, started_by=user) for n in range(8)]
        assert [wait_finished(run.id, timeout=60).status for run in calm] == ["COMPLETED"] * 8
        # The budget is still taken: the limited steps wait, deferred, and nothing called the provider.
        assert not [e for e in read_log(limit_log) if e["event"] == "start"]
        waiting = WorkflowStepExecution.objects.filter(execution__in=limited)
        assert {(s.status, s.retry_count) for s in waiting} <= {("PENDING", 0), ("RUNNING", 0)}
    finally:
        backend.release(NAME, "held-by-the-test")

    finished = [wait_finished(run.id, timeout=90) for run in limited]
    assert [run.status for run in finished] == ["COMPLETED"] * 8, [run.error for run in finished]
    assert len([e for e in read_log(limit_log) if e["event"] == "start"]) == 8, "each step called its model once"
    steps = WorkflowStepExecution.objects.filter(execution__in=limited)
    assert {s.retry_count for s in steps} == {0}, "waiting for a slot is not a retry"
    # Those tried while the budget was held were deferred, and say so (a step first tried
    # after the release may not have waited at all).
    deferred = [s for s in steps if s.attempt > 1]
    assert deferred, "no step was deferred while the budget was held"
    assert all(any(w.startswith(f"Waiting for a slot in the shared rate limit of {NAME}") for w in s.warnings)
               for s in deferred)
