"""Durable orchestration: admit runs, claim step attempts, checkpoint results, advance.

Every state change of a run happens here, inside a transaction that locks the rows it
changes. The fencing rule: a step attempt may write its result only while the step row
is RUNNING with the same ``attempt`` number it claimed. The reaper bumps ``attempt``
when a lease expires, so a worker that wakes up late cannot overwrite the attempt that
replaced it, and a duplicate delivery of the same message finds the row already taken.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from promptpilot.common.db import release_connection
from providers import pricing
from providers.flags import live_features
from providers.ratelimit import limited_adapter
from providers.types import TokenUsage

from ..engine import runner
from ..engine.retry import normalize_retry_config, retry_delay
from ..engine.types import RunContext, StepDefinition, StepResult, WorkflowDefinition
from ..models import (
    ExecutionStatus,
    StepExecutionStatus,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVersion,
)
from ..signals import execution_finished
from . import fast_path
from .dispatch import Continuation, continuation, current_continuation, enqueue_step
from .leases import keeper

logger = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()


def worker_id() -> str:
    """``host:pid`` of the process running the attempt (read each time: prefork pool
    children are forked after this module is imported)."""
    return f"{HOSTNAME}:{os.getpid()}"
CONNECTION_CHECK_AFTER_SECONDS = 1.0


def _conf(key: str) -> Any:
    return settings.PROMPTPILOT[key]


@lru_cache(maxsize=512)
def _version_snapshot(version_id: int) -> tuple[dict[str, Any], WorkflowDefinition]:
    """Versions are immutable, so each process parses a definition once, not on every step."""
    raw = WorkflowVersion.objects.values_list("definition", flat=True).get(pk=version_id)
    return raw, WorkflowDefinition.from_dict(raw)


def _definition(execution: WorkflowExecution) -> WorkflowDefinition:
    return _version_snapshot(execution.version_id)[1]


def error_payload(type_: str, message: str, step: str | None = None, details: dict | None = None) -> dict:
    return {"type": type_, "message": message, "step": step, "details": details or {}}


# --- admission ---------------------------------------------------------------------


def execution_admit(*, execution_id: uuid.UUID | str, run_next: RunNext | None = None,
                    go_on_here: bool = True) -> None:
    """Start a PENDING execution if its workflow has a free slot (arrival order), then hand
    its first steps to ``run_next`` while the inline budget lasts (see ``_go_on``).
    ``go_on_here=False``: the first step goes to the broker, for any worker to take."""
    budget = _conf("INLINE_STEP_BUDGET_SECONDS") if go_on_here else 0
    with continuation(budget) as holder:
        if fast_path.available():
            begun, first = fast_path.admit(
                execution_id, now=timezone.now(), worker=worker_id(), lease_seconds=_conf("STEP_LEASE_SECONDS"),
                claim_next=holder is not None and holder.can_keep(), definition_of=_version_snapshot)
            if begun:
                logger.info("execution.started", extra={"execution_id": str(execution_id)})
                if first is not None:
                    holder.keep(first)
        else:
            begun = False
        if not begun:  # capped workflow, resumed retry, not PENDING, or not PostgreSQL
            _admit(execution_id)
        _go_on(holder, run_next)


def executions_admit(*, execution_ids: list[str], run_next: RunNext | None = None) -> None:
    """Admit a batch of PENDING executions (one ``workflows.advance_executions`` message
    from a process's start relay). Every run's first step but the last one's goes to the
    broker, so the batch spreads over the workers; the last one goes on here. A run that
    fails to be admitted is logged and stays PENDING: the reaper sends it again."""
    for position, execution_id in enumerate(execution_ids, start=1):
        try:
            execution_admit(execution_id=execution_id, run_next=run_next,
                            go_on_here=position == len(execution_ids))
        except Exception:
            logger.exception("execution.admit_failed", extra={"execution_id": str(execution_id)})


def _admit(execution_id: uuid.UUID | str) -> None:
    execution = WorkflowExecution.objects.select_related("workflow").filter(pk=execution_id).first()
    if execution is None:
        logger.info("execution.admit.missing", extra={"execution_id": str(execution_id)})
        return
    if execution.status != ExecutionStatus.PENDING:
        return
    if execution.workflow.max_concurrent_executions:
        workflow_admit_pending(workflow_id=execution.workflow_id)
        return
    with transaction.atomic():
        # NOTE: order_by("pk"): a pk lookup must not inherit Meta.ordering (the planner
        # could walk the created_at index under FOR UPDATE).
        locked = (
            WorkflowExecution.objects.select_for_update()
            .filter(pk=execution_id, status=ExecutionStatus.PENDING)
            .order_by("pk")
            .first()
        )
        if locked is not None:
            _begin(locked)


def workflow_admit_pending(*, workflow_id: int) -> int:
    """Admit the oldest PENDING runs of a capped workflow while slots are free."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().filter(pk=workflow_id).order_by("pk").first()
        if workflow is None:
            return 0
        pending = WorkflowExecution.objects.filter(
            workflow_id=workflow_id, status=ExecutionStatus.PENDING
        ).order_by("created_at")
        if workflow.max_concurrent_executions:
            running = WorkflowExecution.objects.filter(
                workflow_id=workflow_id, status=ExecutionStatus.RUNNING
            ).count()
            free = workflow.max_concurrent_executions - running
            if free <= 0:
                return 0
            pending = pending[:free]
        # The workflow row lock serialises admissions, so counting then starting is safe.
        admitted = 0
        for execution in pending:
            _begin(execution)
            admitted += 1
        return admitted


def _begin(execution: WorkflowExecution) -> None:
    """PENDING → RUNNING, fix the deadline, schedule the first (or resumed) step."""
    now = timezone.now()
    definition = _definition(execution)
    execution.status = ExecutionStatus.RUNNING
    execution.started_at = execution.started_at or now
    timeout = definition.timeout_seconds
    execution.deadline_at = execution.started_at + timedelta(seconds=timeout) if timeout else None
    execution.save(update_fields=["status", "started_at", "deadline_at"])
    resume_from = (execution.metadata or {}).get("resume_from")
    step = definition.step(resume_from) if resume_from else runner.first_step(definition)
    if step is None:
        _finish(execution, ExecutionStatus.COMPLETED, output=None)
        return
    _schedule_step(execution, step)
    logger.info("execution.started", extra={"execution_id": str(execution.id)})


def _schedule_step(execution: WorkflowExecution, step: StepDefinition) -> WorkflowStepExecution:
    now = timezone.now()
    step_id = None
    raw = _version_snapshot(execution.version_id)[0]
    snapshot_id = next((s.get("id") for s in raw["steps"] if s["name"] == step.name), None)
    if snapshot_id and WorkflowStep.objects.filter(pk=snapshot_id, workflow_id=execution.workflow_id).exists():
        step_id = snapshot_id
    step_execution = WorkflowStepExecution.objects.create(
        execution=execution,
        step_id=step_id,
        step_name=step.name,
        step_order=step.order,
        step_type=step.type,
        status=StepExecutionStatus.PENDING,
        retry_config=normalize_retry_config(step.retry_config),
        attempt=1,
        available_at=now,
    )
    enqueue_step(step_execution.id, step_execution.attempt)
    return step_execution


# --- one step attempt ----------------------------------------------------------------


RunNext = Callable[[str, int], object]
_handed_over = threading.local()


def step_attempt_run(*, step_execution_id: uuid.UUID | str, attempt: int, run_next: RunNext | None = None) -> str:
    """Run one attempt of one step: claim, compute (outside any transaction), checkpoint;
    then hand the steps that follow to ``run_next`` while the inline budget lasts.

    ``run_next(step_execution_id, attempt)`` runs an attempt as a task of its own in this
    process (the Celery task applies itself: workflows/tasks.py); without it, attempts run
    by a nested call of this function (tests, in-process callers). Returns what happened
    to this attempt ("checkpointed", "retry-scheduled", "not-claimed", "rejected") for logs
    and tests; a duplicate or late delivery is a no-op.
    """
    with continuation(_conf("INLINE_STEP_BUDGET_SECONDS")) as holder:
        handed = _take_handed_over(step_execution_id, attempt)
        outcome = _run_claimed(handed) if handed is not None else _attempt(step_execution_id, attempt)
        _go_on(holder, run_next)
    return outcome


def _go_on(holder: Continuation | None, run_next: RunNext | None) -> None:
    """Run the next step in this process instead of sending it to the broker, while the
    task's budget lasts: each attempt still runs as its own task (``run_next``), claimed
    (from its committed PENDING row, exactly like a delivered message, or in advance by the
    checkpoint that created it: handed over here), leased and checkpointed on its own. A
    worker lost in the middle leaves a PENDING row, or a RUNNING one whose lease lapses,
    and the reaper sends it again."""
    while holder is not None and (following := holder.take()) is not None:
        if isinstance(following, fast_path.Claimed):
            step_execution_id, attempt = following.step_execution_id, following.attempt
            _handed_over.__dict__.setdefault("claims", {})[(step_execution_id, attempt)] = following
        else:
            step_execution_id, attempt = following
        try:
            if run_next is not None:
                run_next(step_execution_id, attempt)
            else:
                step_attempt_run(step_execution_id=step_execution_id, attempt=attempt)
        finally:
            _take_handed_over(step_execution_id, attempt)  # never left behind, whatever happened


def _take_handed_over(step_execution_id, attempt: int) -> fast_path.Claimed | None:
    claims = getattr(_handed_over, "claims", None)
    return claims.pop((str(step_execution_id), attempt), None) if claims else None


def _attempt(step_execution_id: uuid.UUID | str, attempt: int) -> str:
    claimed = None
    if fast_path.available():
        claimed = fast_path.claim(step_execution_id, attempt, worker=worker_id(),
                                  lease_seconds=_conf("STEP_LEASE_SECONDS"), now=timezone.now())
    if claimed is None:  # not claimable, or not PostgreSQL: the ORM path decides and says why
        orm_claimed = _claim(step_execution_id, attempt)
        if orm_claimed is None:
            return "not-claimed"
        step_execution, execution, _ = orm_claimed
        claimed = fast_path.Claimed(
            step_execution_id=str(step_execution.id), attempt=attempt, step_name=step_execution.step_name,
            execution_id=execution.id, workflow_id=execution.workflow_id, version_id=execution.version_id,
            step_tokens=step_execution.tokens or {}, context=_run_context(execution),
        )
    return _run_claimed(claimed)


def _run_claimed(claimed: fast_path.Claimed) -> str:
    attempt = claimed.attempt
    raw, definition = _version_snapshot(claimed.version_id)
    step = definition.step(claimed.step_name)
    limits = {
        "max_output_chars": _conf("TEMPLATE_MAX_OUTPUT_CHARS"),
        "max_loop_iterations": _conf("TEMPLATE_MAX_LOOP_ITERATIONS"),
        "features": live_features(),  # admin switches (workflow.multiModel), read when a step asks
    }
    began = time.monotonic()
    with keeper.holding(claimed.step_execution_id, attempt):
        result = runner.run_step(step, claimed.context, providers=_adapter_for_call, limits=limits)
    pricing.annotate_costs(result.model_outputs)  # cost_usd on each model output
    if time.monotonic() - began > CONNECTION_CHECK_AFTER_SECONDS:
        # The connection sat idle through a long step: drop it if broken or too old, as Django
        # does between requests (a check costs a round trip, so not after every short step).
        close_old_connections()
    if fast_path.available():
        holder = current_continuation()
        done = fast_path.checkpoint(
            claimed, step, definition, result, raw_definition=raw, now=timezone.now(), worker=worker_id(),
            lease_seconds=_conf("STEP_LEASE_SECONDS"), claim_next=holder is not None and holder.can_keep(),
            add_tokens=_add_tokens,
        )
        if done is not None:
            if done.finished:
                _after_finish(claimed.execution_id, claimed.workflow_id, ExecutionStatus.COMPLETED)
            elif done.next_claimed is not None:
                holder.keep(done.next_claimed)
            return "checkpointed"
    return _checkpoint(claimed.step_execution_id, attempt, step, definition, result)


def _adapter_for_call(name: str):
    """The adapter a step is about to call: ``registry.get_adapter`` wrapped in the
    provider's shared rate limit (reading both may query the database). The call itself
    may take seconds, so this thread's connection goes back to the pool first: a worker
    waiting on a hundred calls holds no connection for any of them."""
    adapter = limited_adapter(name)
    release_connection()
    return adapter


def _claim(step_execution_id, attempt: int):
    now = timezone.now()
    with transaction.atomic():
        step_execution = (
            WorkflowStepExecution.objects.select_for_update()
            .filter(pk=step_execution_id)
            .order_by("pk")  # not Meta.ordering, which joins (and would lock) the run
            .first()
        )
        if step_execution is None:
            logger.info("step.claim.missing", extra={"step_execution_id": str(step_execution_id)})
            return None
        if step_execution.attempt != attempt or step_execution.status != StepExecutionStatus.PENDING:
            logger.info(
                "step.claim.duplicate_or_stale",
                extra={"step_execution_id": str(step_execution_id), "attempt": attempt,
                       "current_attempt": step_execution.attempt, "status": step_execution.status},
            )
            return None
        execution = WorkflowExecution.objects.get(pk=step_execution.execution_id)
        if execution.status != ExecutionStatus.RUNNING:
            return None
        if execution.deadline_at and now >= execution.deadline_at:
            _fail_timeout(execution, running_step=step_execution)
            return None
        step_execution.status = StepExecutionStatus.RUNNING
        step_execution.lease_expires_at = now + timedelta(seconds=_conf("STEP_LEASE_SECONDS"))
        step_execution.worker = worker_id()
        step_execution.started_at = step_execution.started_at or now
        step_execution.save(update_fields=["status", "lease_expires_at", "worker", "started_at"])
    return step_execution, execution, _definition(execution)


def _run_context(execution: WorkflowExecution) -> RunContext:
    steps: dict[str, dict[str, Any]] = {}
    done = (
        WorkflowStepExecution.objects.filter(
            execution_id=execution.id,
            # Skipped steps stay out of the context, as in previews: templates can test `is defined`.
            status__in=[StepExecutionStatus.COMPLETED, StepExecutionStatus.FAILED],
        )
        .order_by("step_order")
        .values("step_name", "output", "outputs", "status")
    )
    for row in done:
        steps[row["step_name"]] = {"output": row["output"], "outputs": row["outputs"], "status": row["status"]}
    metadata = execution.metadata or {}
    trigger = {"type": execution.trigger_type, "payload": metadata.get("payload")}
    return RunContext(inputs=execution.input or {}, steps=steps, trigger=trigger)


def _checkpoint(step_execution_id, attempt: int, step: StepDefinition, definition: WorkflowDefinition,
                result: StepResult) -> str:
    now = timezone.now()
    with transaction.atomic():
        step_execution = WorkflowStepExecution.objects.select_for_update().get(pk=step_execution_id)
        if step_execution.attempt != attempt or step_execution.status != StepExecutionStatus.RUNNING:
            # Fencing: a newer attempt owns this step, or the run was cancelled.
            step_execution.warnings = [
                *step_execution.warnings,
                f"Late result of attempt {attempt} from {worker_id()} discarded "
                f"(step is {step_execution.status}, attempt {step_execution.attempt}).",
            ]
            step_execution.save(update_fields=["warnings"])
            logger.warning("step.result_rejected", extra={"step_execution_id": str(step_execution_id),
                                                           "attempt": attempt})
            return "rejected"
        execution = WorkflowExecution.objects.select_for_update().get(pk=step_execution.execution_id)
        if execution.status != ExecutionStatus.RUNNING:
            step_execution.status = StepExecutionStatus.CANCELLED
            step_execution.completed_at = now
            step_execution.lease_expires_at = None
            step_execution.save(update_fields=["status", "completed_at", "lease_expires_at"])
            return "rejected"

        _record_attempt(step_execution, result)
        _add_tokens(execution, result)  # every attempt's model calls count, retried ones too
        if result.status == runner.FAILED:
            delay = retry_delay(step_execution.retry_config, retry_count=step_execution.retry_count,
                                result=result, max_backoff=_conf("MAX_BACKOFF_SECONDS"))
            if delay is not None:
                _schedule_retry(step_execution, result, delay, now)
                execution.save(update_fields=["aggregate_tokens", "warnings"])
                return "retry-scheduled"

        step_execution.status = result.status
        step_execution.completed_at = now
        step_execution.lease_expires_at = None
        step_execution.save()

        if execution.deadline_at and now >= execution.deadline_at:
            _fail_timeout(execution, running_step=None)
            return "checkpointed"
        transition = runner.next_transition(definition, step, result)
        if transition.fail_run:
            _finish(execution, ExecutionStatus.FAILED, error=result.error)
            return "checkpointed"
        for skipped in transition.skipped:
            _record_skipped(execution, skipped, now)
        if transition.next_step is not None:
            execution.save(update_fields=["aggregate_tokens", "warnings"])
            _schedule_step(execution, transition.next_step)
        else:
            _finish(execution, ExecutionStatus.COMPLETED, output=result.output)
    return "checkpointed"


def _record_attempt(step_execution: WorkflowStepExecution, result: StepResult) -> None:
    step_execution.input = result.input
    step_execution.output = result.output
    step_execution.outputs = result.outputs
    step_execution.error = result.error
    step_execution.model_outputs = result.model_outputs
    step_execution.tokens = (TokenUsage.from_raw(step_execution.tokens) + TokenUsage.from_raw(result.tokens)).as_dict()
    step_execution.warnings = [*step_execution.warnings, *result.warnings]


def _schedule_retry(step_execution: WorkflowStepExecution, result: StepResult, delay: float, now) -> None:
    error = result.error or {}
    step_execution.warnings = [
        *step_execution.warnings,
        f"Attempt {step_execution.attempt} failed with {error.get('type')}: {error.get('message')}; "
        f"retrying in {delay:.1f} s.",
    ]
    step_execution.status = StepExecutionStatus.PENDING
    step_execution.attempt += 1
    step_execution.retry_count += 1
    step_execution.lease_expires_at = None
    step_execution.available_at = now + timedelta(seconds=delay)
    step_execution.save()
    enqueue_step(step_execution.id, step_execution.attempt, countdown=delay)


def _record_skipped(execution: WorkflowExecution, step: StepDefinition, now) -> None:
    WorkflowStepExecution.objects.get_or_create(
        execution=execution,
        step_order=step.order,
        defaults={
            "step_name": step.name,
            "step_type": step.type,
            "status": StepExecutionStatus.SKIPPED,
            "retry_config": normalize_retry_config(step.retry_config),
            "completed_at": now,
        },
    )


def _add_tokens(execution: WorkflowExecution, result: StepResult) -> None:
    previous = execution.aggregate_tokens or {}
    execution.aggregate_tokens = {
        **(TokenUsage.from_raw(previous) + TokenUsage.from_raw(result.tokens)).as_dict(),
        # null as soon as one model call had no price (providers/pricing.py)
        "cost_usd": pricing.add_costs(previous.get("cost_usd", 0), pricing.sum_costs(result.model_outputs)),
    }
    if result.warnings:
        execution.warnings = [*execution.warnings, *result.warnings]


# --- endings -------------------------------------------------------------------------


def _finish(execution: WorkflowExecution, status: str, *, output: Any = None, error: dict | None = None) -> None:
    execution.status = status
    execution.completed_at = timezone.now()
    if status == ExecutionStatus.COMPLETED:
        execution.output = output
    execution.error = error
    execution.save()
    _after_finish(execution.id, execution.workflow_id, status)


def _after_finish(execution_id, workflow_id: int, status: str) -> None:
    """Once the run's end commits: free its slot for the oldest waiting run, tell the receivers."""
    capped = Workflow.objects.filter(pk=workflow_id).values_list("max_concurrent_executions", flat=True).first()
    if capped:  # a slot is free now: start the oldest waiting run
        transaction.on_commit(lambda: workflow_admit_pending(workflow_id=workflow_id))
    transaction.on_commit(lambda: _announce_finished(execution_id))
    logger.info("execution.finished", extra={"execution_id": str(execution_id), "status": status})


def _announce_finished(execution_id) -> None:
    execution = WorkflowExecution.objects.filter(pk=execution_id).first()
    if execution is not None:
        try:
            execution_finished.send(sender=WorkflowExecution, execution=execution)
        except Exception:
            logger.exception("execution.finished_handler_failed", extra={"execution_id": str(execution_id)})


def _fail_timeout(execution: WorkflowExecution, *, running_step: WorkflowStepExecution | None) -> None:
    now = timezone.now()
    timeout = _definition(execution).timeout_seconds
    step_name = running_step.step_name if running_step else None
    WorkflowStepExecution.objects.filter(
        execution_id=execution.id, status__in=[StepExecutionStatus.PENDING, StepExecutionStatus.RUNNING]
    ).update(status=StepExecutionStatus.CANCELLED, completed_at=now, lease_expires_at=None)
    _finish(
        execution,
        ExecutionStatus.FAILED,
        error=error_payload(
            "Timeout",
            f"The run exceeded its workflow's timeout of {timeout} s (started {execution.started_at.isoformat()}).",
            step_name,
            {"timeout_seconds": timeout, "started_at": execution.started_at.isoformat()},
        ),
    )


def execution_fail(*, execution: WorkflowExecution, error: dict) -> None:
    """Fail a run from outside a step attempt (reaper: WorkerLost, Timeout)."""
    now = timezone.now()
    WorkflowStepExecution.objects.filter(
        execution_id=execution.id, status__in=[StepExecutionStatus.PENDING, StepExecutionStatus.RUNNING]
    ).update(status=StepExecutionStatus.CANCELLED, completed_at=now, lease_expires_at=None)
    _finish(execution, ExecutionStatus.FAILED, error=error)
