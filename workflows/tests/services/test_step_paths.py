"""How a worker task goes through a run's steps: the PostgreSQL fast path against the ORM
path, going on with the next step inside the same task (the inline budget), and leases.

In-process, without a broker: ``dispatch._send`` is replaced by a list, so each test sees
exactly which messages a worker would have sent.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from workflows.models import StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services import orchestration
from workflows.services.executions import execution_cancel, execution_start
from workflows.services.leases import LeaseKeeper
from workflows.tests.factories import make_workflow

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run, as in a worker


@pytest.fixture
def sent(broker_messages):
    return broker_messages(0)  # each start's message on its own, at commit (batching: test_relay.py)


@pytest.fixture
def budget(settings):
    def set_budget(seconds: float) -> None:
        settings.PROMPTPILOT = {**settings.PROMPTPILOT, "INLINE_STEP_BUDGET_SECONDS": seconds}
    return set_budget


def _echo(name: str, template: str, **extra) -> dict:
    return {"name": name, "type": "PROMPT",
            "config": {"template": template, "model": {"provider": "echo", "model": "echo", **extra.pop("params", {})},
                       **extra}}


def _three_steps(user):
    return make_workflow(user, variables=[{"name": "topic", "type": "STRING", "required": True}], steps=[
        _echo("draft", "Write about {{ input.topic }}"),
        {"name": "shape", "type": "TRANSFORM",
         "config": {"template": '{"words": {{ steps.draft.output.split() | length }}}', "output_format": "json"}},
        _echo("final", "{{ steps.draft.output }} ({{ steps.shape.output.words }} words)"),
    ])


def _drive(sent) -> None:
    """Deliver every message sent so far, in order, as a worker would."""
    while sent:
        name, args = sent.pop(0)
        if name == "workflows.advance_execution":
            orchestration.execution_admit(execution_id=args[0])
        else:
            orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))


def _recorded(execution_id) -> dict:
    run = WorkflowExecution.objects.get(pk=execution_id)
    steps = [
        {key: getattr(s, key) for key in ("step_name", "step_order", "status", "input", "output", "outputs",
                                           "tokens", "warnings", "attempt", "error")}
        | {"has_step": s.step_id is not None, "worker": bool(s.worker), "timed": bool(s.started_at and s.completed_at),
           "lease": s.lease_expires_at,
           "models": [{k: v for k, v in m.items() if k != "latency_ms"} for m in s.model_outputs]}
        for s in run.step_executions.order_by("step_order")
    ]
    return {"status": run.status, "output": run.output, "error": run.error, "tokens": run.aggregate_tokens,
            "warnings": run.warnings, "timed": bool(run.started_at and run.completed_at), "steps": steps}


def test_fast_statements_record_exactly_what_the_general_code_records(user, sent, settings):
    workflow = _three_steps(user)
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "FAST_STATEMENTS": True}
    fast = execution_start(workflow=workflow, inputs={"topic": "otters"}, started_by=user)
    _drive(sent)
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "FAST_STATEMENTS": False}  # as on SQLite
    orm = execution_start(workflow=workflow, inputs={"topic": "otters"}, started_by=user)
    _drive(sent)

    fast_run, orm_run = _recorded(fast.id), _recorded(orm.id)
    assert fast_run["status"] == "COMPLETED", fast_run
    assert fast_run["output"] == "Write about otters (3 words)"
    assert fast_run["tokens"]["total"] > 0
    assert [s["status"] for s in fast_run["steps"]] == ["COMPLETED"] * 3
    assert all(s["has_step"] and s["worker"] and s["timed"] and s["lease"] is None for s in fast_run["steps"])
    assert fast_run == orm_run


def test_a_task_goes_on_with_the_next_steps_while_its_budget_lasts(user, sent, budget):
    budget(2.0)
    execution = execution_start(workflow=_three_steps(user), inputs={"topic": "owls"}, started_by=user)
    assert [name for name, _ in sent] == ["workflows.advance_execution"]

    orchestration.execution_admit(execution_id=sent.pop(0)[1][0])

    assert sent == [], "no step needed a message of its own"
    run = _recorded(execution.id)
    assert run["status"] == "COMPLETED" and run["output"] == "Write about owls (3 words)"
    assert all(s["status"] == "COMPLETED" and s["attempt"] == 1 for s in run["steps"])


def test_within_the_budget_each_step_attempt_still_runs_as_its_own_celery_task(user, sent, budget):
    from celery.signals import task_prerun

    from workflows import tasks

    budget(2.0)
    execution = execution_start(workflow=_three_steps(user), inputs={"topic": "owls"}, started_by=user)
    started: list[tuple[str, str, tuple]] = []

    def record(task_id=None, task=None, args=None, **kwargs):
        started.append((task.name, task_id, tuple(args or ())))

    assert sent.pop(0) == ("workflows.advance_execution", [str(execution.id)])
    task_prerun.connect(record, weak=False)
    try:
        tasks.advance_execution.apply(args=[str(execution.id)])
    finally:
        task_prerun.disconnect(record)

    steps = {str(s.id): s.step_name for s in WorkflowStepExecution.objects.filter(execution=execution)}
    run_steps = [(task_id, args) for name, task_id, args in started if name == "workflows.run_step"]
    assert [steps[args[0]] for _, args in run_steps] == ["draft", "shape", "final"]
    assert len({task_id for task_id, _ in run_steps}) == 3, "one task (and task id) per step attempt"
    assert sent == [], "and none of them went through the broker"
    assert _recorded(execution.id)["status"] == "COMPLETED"


def test_with_no_budget_every_step_attempt_is_its_own_task(user, sent, budget):
    budget(0)
    execution = execution_start(workflow=_three_steps(user), inputs={"topic": "owls"}, started_by=user)
    orchestration.execution_admit(execution_id=sent.pop(0)[1][0])
    first = WorkflowStepExecution.objects.get(execution=execution)
    assert first.status == StepExecutionStatus.PENDING
    assert sent == [("workflows.run_step", [str(first.id), 1])]

    delivered = 0
    while sent:
        _drive([sent.pop(0)])
        delivered += 1
    assert delivered == 3
    assert _recorded(execution.id)["status"] == "COMPLETED"


def test_a_spent_budget_hands_the_next_step_to_the_broker(user, sent, budget):
    budget(0.05)
    workflow = make_workflow(user, steps=[
        _echo("slow", "one", params={"delay_ms": 120}),
        _echo("next", "two"),
    ])
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    orchestration.execution_admit(execution_id=sent.pop(0)[1][0])

    following = WorkflowStepExecution.objects.get(execution=execution, step_name="next")
    assert following.status == StepExecutionStatus.PENDING and not following.worker
    assert sent == [("workflows.run_step", [str(following.id), 1])]
    _drive(sent)
    assert _recorded(execution.id)["status"] == "COMPLETED"


def test_a_duplicate_or_stale_delivery_claims_nothing(user, sent, budget):
    budget(0)
    execution = execution_start(workflow=_three_steps(user), inputs={"topic": "owls"}, started_by=user)
    _drive([sent.pop(0)])
    first = WorkflowStepExecution.objects.get(execution=execution)

    assert orchestration.step_attempt_run(step_execution_id=first.id, attempt=2) == "not-claimed"
    assert orchestration.step_attempt_run(step_execution_id=first.id, attempt=1) == "checkpointed"
    assert orchestration.step_attempt_run(step_execution_id=first.id, attempt=1) == "not-claimed"
    first.refresh_from_db()
    assert first.status == StepExecutionStatus.COMPLETED and first.attempt == 1


def test_a_cancelled_run_claims_no_further_step(user, sent, budget):
    budget(0)
    execution = execution_start(workflow=_three_steps(user), inputs={"topic": "owls"}, started_by=user)
    _drive([sent.pop(0)])
    execution_cancel(execution=WorkflowExecution.objects.get(pk=execution.id), user=user)
    _name, args = sent.pop(0)

    assert orchestration.step_attempt_run(step_execution_id=args[0], attempt=args[1]) == "not-claimed"
    run = _recorded(execution.id)
    assert run["status"] == "CANCELLED"
    assert [s["status"] for s in run["steps"]] == ["CANCELLED"]


def test_a_result_fenced_off_by_a_newer_attempt_is_discarded(user, sent, budget, monkeypatch):
    budget(0)
    workflow = make_workflow(user, steps=[_echo("only", "hello")])
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    _drive([sent.pop(0)])
    step = WorkflowStepExecution.objects.get(execution=execution)
    real_run_step = orchestration.runner.run_step

    def reaped_meanwhile(*args, **kwargs):
        # The reaper re-queues the attempt while this worker computes (its lease lapsed).
        WorkflowStepExecution.objects.filter(pk=step.pk).update(status=StepExecutionStatus.PENDING, attempt=2)
        return real_run_step(*args, **kwargs)

    monkeypatch.setattr(orchestration.runner, "run_step", reaped_meanwhile)
    assert orchestration.step_attempt_run(step_execution_id=step.id, attempt=1) == "rejected"
    step.refresh_from_db()
    assert step.status == StepExecutionStatus.PENDING and step.attempt == 2 and step.output is None
    assert any("Late result of attempt 1" in w for w in step.warnings)
    assert WorkflowExecution.objects.get(pk=execution.id).status == "RUNNING"


def test_capped_workflows_are_admitted_in_arrival_order(user, sent, budget):
    budget(0)
    workflow = make_workflow(user, steps=[_echo("only", "hi")], max_concurrent_executions=1)
    first = execution_start(workflow=workflow, inputs={}, started_by=user)
    second = execution_start(workflow=workflow, inputs={}, started_by=user)
    for _name, args in [m for m in sent if m[0] == "workflows.advance_execution"][::-1]:  # delivered out of order
        orchestration.execution_admit(execution_id=args[0])
    statuses = dict(WorkflowExecution.objects.filter(pk__in=[first.pk, second.pk]).values_list("pk", "status"))
    assert statuses == {first.pk: "RUNNING", second.pk: "PENDING"}


def test_a_capped_run_that_completes_admits_the_oldest_waiting_one_at_once(user, sent, budget):
    budget(0)  # every step through the "broker": the second run is admitted while the first runs
    workflow = make_workflow(user, steps=[_echo("a", "a"), _echo("b", "b")], max_concurrent_executions=1)
    first = execution_start(workflow=workflow, inputs={}, started_by=user)
    second = execution_start(workflow=workflow, inputs={}, started_by=user)
    _drive(sent)  # no reaper: the second run starts because the first one's end freed its slot

    statuses = dict(WorkflowExecution.objects.filter(pk__in=[first.pk, second.pk]).values_list("pk", "status"))
    assert statuses == {first.pk: "COMPLETED", second.pk: "COMPLETED"}


def test_the_lease_keeper_renews_held_attempts_and_leaves_fenced_ones(user, sent, budget):
    budget(0)
    workflow = make_workflow(user, steps=[_echo("a", "a"), _echo("b", "b")])
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    _drive([sent.pop(0)])
    step = WorkflowStepExecution.objects.get(execution=execution)
    soon = timezone.now() + timedelta(seconds=1)
    WorkflowStepExecution.objects.filter(pk=step.pk).update(status=StepExecutionStatus.RUNNING, lease_expires_at=soon)

    keeper = LeaseKeeper()
    keeper.renew({str(step.pk): 1}, lease=60)
    step.refresh_from_db()
    assert step.lease_expires_at > timezone.now() + timedelta(seconds=50)

    WorkflowStepExecution.objects.filter(pk=step.pk).update(attempt=2, lease_expires_at=soon)
    keeper.renew({str(step.pk): 1}, lease=60)  # attempt 1 was fenced off: not ours to renew
    step.refresh_from_db()
    assert step.lease_expires_at == soon


def test_the_lease_keeper_reports_a_lost_lease_only_for_an_attempt_still_running_here(user, sent, budget, caplog):
    budget(0)
    workflow = make_workflow(user, steps=[_echo("a", "a"), _echo("b", "b")])
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    _drive([sent.pop(0)])
    step = WorkflowStepExecution.objects.get(execution=execution)
    keeper = LeaseKeeper()
    snapshot = {str(step.pk): 1}  # what the keeper read before the attempt ended and checkpointed

    with caplog.at_level("INFO", logger="workflows.services.leases"):
        WorkflowStepExecution.objects.filter(pk=step.pk).update(status=StepExecutionStatus.COMPLETED)
        keeper.renew(snapshot, lease=60)  # ended here since: not lost
        assert not [r for r in caplog.records if r.getMessage() == "step.lease_lost"]

        WorkflowStepExecution.objects.filter(pk=step.pk).update(status=StepExecutionStatus.RUNNING, attempt=2)
        with keeper.holding(step.pk, 1):  # still running here, but fenced off: lost
            keeper.renew(snapshot, lease=60)
    assert [r.step_execution_id for r in caplog.records if r.getMessage() == "step.lease_lost"] == [str(step.pk)]


def test_a_run_timed_out_by_the_reaper_while_its_step_waits_to_be_re_run_names_that_step(user, sent, budget):
    """The step's worker was lost (or its message is still queued): the step is PENDING
    when the deadline passes, and the Timeout still says which step the run was on."""
    from workflows.services.reaper import reaper_sweep

    budget(0)  # the admit hands the first step on as a message instead of running it
    workflow = make_workflow(user, timeout_seconds=60, steps=[_echo("first", "one"), _echo("second", "two")])
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    orchestration.execution_admit(execution_id=sent.pop(0)[1][0])  # the run starts; its step message waits
    step = WorkflowStepExecution.objects.get(execution=execution, step_name="first")
    assert step.status == StepExecutionStatus.PENDING
    WorkflowExecution.objects.filter(pk=execution.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))

    assert reaper_sweep().timed_out == 1
    execution.refresh_from_db()
    assert execution.status == "FAILED" and execution.error["type"] == "Timeout"
    assert execution.error["step"] == "first"
    step.refresh_from_db()
    assert step.status == StepExecutionStatus.CANCELLED
