"""A step whose provider's shared budget (ProviderLimit) is full gives its worker thread
back: the attempt is deferred (PENDING again, sent with a countdown, not a retry) until a
slot frees, within RATE_LIMIT_MAX_WAIT_SECONDS in all; past that the RateLimited failure
meets the step's retry policy.

In-process, without a broker: ``dispatch._send`` is replaced by a list of the messages a
worker would have sent, countdowns included.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from providers import ratelimit
from providers.models import ProviderLimit
from providers.ratelimit import Limit
from workflows.models import StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services import dispatch, orchestration
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run, as in a worker


@pytest.fixture
def sent(monkeypatch, settings) -> list[tuple[str, list, float | None]]:
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "START_BATCH_SECONDS": 0, "RATE_LIMIT_REDIS_URL": "",
                            "RATE_LIMIT_HOLD_SECONDS": 0.05, "RATE_LIMIT_MAX_WAIT_SECONDS": 30}
    messages: list[tuple[str, list, float | None]] = []
    monkeypatch.setattr(dispatch, "_send",
                        lambda name, args, countdown=None: messages.append((name, args, countdown)) or True)
    return messages


@pytest.fixture
def busy_echo():
    """The echo provider's budget of one call in flight, taken by someone else."""
    ProviderLimit.objects.create(provider="echo", max_concurrency=1)
    backend = ratelimit.get_backend()
    assert backend.try_acquire("echo", Limit(max_concurrency=1), "someone-else", 60).acquired
    yield lambda: backend.release("echo", "someone-else")
    backend.release("echo", "someone-else")


def _deliver_next(sent) -> float | None:
    """Deliver the oldest message as a worker would (countdowns elapse at once); its countdown."""
    name, args, countdown = sent.pop(0)
    if name == "workflows.advance_execution":
        orchestration.execution_admit(execution_id=args[0])
    else:
        orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))
    return countdown


def _one_step_run(user):
    workflow = make_workflow(user, steps=[{
        "name": "ask", "type": "PROMPT", "config": {"template": "hello", "model": {"provider": "echo", "model": "echo"}},
    }])  # the default retry policy: no retries
    return execution_start(workflow=workflow, inputs={}, started_by=user)


def _step(run) -> WorkflowStepExecution:
    return WorkflowStepExecution.objects.get(execution=run)


def test_a_step_waits_for_a_slot_by_countdowns_without_a_retry_then_runs_once(user, sent, busy_echo):
    run = _one_step_run(user)
    while not WorkflowStepExecution.objects.filter(execution=run, attempt__gt=1).exists():
        _deliver_next(sent)

    step = _step(run)
    assert (step.status, step.attempt, step.retry_count) == (StepExecutionStatus.PENDING, 2, 0)
    assert step.error["type"] == "RateLimited" and step.error["details"]["deferrals"] == 1
    waiting_since = step.error["details"]["waiting_since"]
    assert [w for w in step.warnings if w.startswith("Waiting for a slot in the shared rate limit of echo")]
    assert step.lease_expires_at is None and step.available_at > timezone.now() - timedelta(seconds=1)
    assert [(name, args) for name, args, _ in sent] == [("workflows.run_step", [str(step.id), 2])]
    assert sent[0][2] and sent[0][2] > 0, "sent back as a countdown, not run again at once"

    _deliver_next(sent)  # still busy: deferred again, same wait clock, one note in the warnings
    step = _step(run)
    assert (step.status, step.attempt, step.retry_count) == (StepExecutionStatus.PENDING, 3, 0)
    assert step.error["details"]["waiting_since"] == waiting_since and step.error["details"]["deferrals"] == 2
    assert len([w for w in step.warnings if w.startswith("Waiting for a slot")]) == 1

    busy_echo()  # the other call ends
    _deliver_next(sent)
    step = _step(run)
    assert (step.status, step.attempt, step.retry_count, step.error) == (StepExecutionStatus.COMPLETED, 3, 0, None)
    assert step.output == "hello"
    run.refresh_from_db()
    assert run.status == "COMPLETED" and run.output == "hello"
    assert sent == []


def test_past_the_whole_wait_budget_the_failure_meets_the_retry_policy(user, sent, busy_echo):
    run = _one_step_run(user)
    while not WorkflowStepExecution.objects.filter(execution=run, attempt__gt=1).exists():
        _deliver_next(sent)
    step = _step(run)
    # As if the step had been deferred for a minute already (budget: 30 s).
    long_ago = (timezone.now() - timedelta(seconds=60)).isoformat()
    step.error = {**step.error, "details": {**step.error["details"], "waiting_since": long_ago}}
    step.save(update_fields=["error"])

    _deliver_next(sent)
    step = _step(run)
    assert (step.status, step.retry_count) == (StepExecutionStatus.FAILED, 0)
    assert step.error["type"] == "RateLimited" and "waiting_since" not in step.error["details"]
    run = WorkflowExecution.objects.get(pk=run.pk)
    assert run.status == "FAILED" and run.error["type"] == "RateLimited"


def test_each_deferral_is_counted_and_logged_apart_from_retries(user, sent, busy_echo, caplog):
    from promptpilot.common import metrics

    def count(metric, **labels) -> float:
        return metric.labels(**labels)._value.get()

    deferrals, retries = count(metrics.STEP_SLOT_DEFERRALS, provider="echo"), count(metrics.STEP_RETRIES, reason="RateLimited")
    run = _one_step_run(user)
    with caplog.at_level("INFO", logger="workflows.services.transitions"):
        while not WorkflowStepExecution.objects.filter(execution=run, attempt__gt=1).exists():
            _deliver_next(sent)
    assert count(metrics.STEP_SLOT_DEFERRALS, provider="echo") == deferrals + 1
    assert count(metrics.STEP_RETRIES, reason="RateLimited") == retries, "a deferral is not a retry"
    assert [r for r in caplog.records if r.getMessage() == "step.deferred" and r.provider == "echo"]
