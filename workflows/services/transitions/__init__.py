"""Every status change of an execution and of its steps: one function each.

Creating an execution is ``executions.execution_start``'s (every trigger goes through
it); every later change is here: a run's admission (``execution_begin``,
``workflow_admit_pending``), an attempt's claim (``step_claim``) and checkpoint
(``step_checkpoint``: completed, failed, retried, skipped, parked WAITING, fenced off),
a wait's end (``step_resume``: a decision or a timer), a lost worker's
attempt (``step_lease_expire``), and a run's end (``execution_fail``,
``execution_time_out``, ``execution_cancel``). Each function decides, writes (in one
transaction that locks the rows it changes) and logs the event; the orchestration
(``orchestration.py``) only drives them.

The fencing rule: a step attempt may write its result only while the step row is
RUNNING with the same ``attempt`` number it claimed. The reaper bumps ``attempt`` when a
lease expires, so a worker that wakes up late cannot overwrite the attempt that replaced
it, and a duplicate delivery of the same message finds the row already taken.

On PostgreSQL the commonest cases (admitting an uncapped run, a claim, a COMPLETED step
going on) are a few hand-written statements (``_postgres``), the body of the same
function for that case; every other case, and every other database, is the ORM code
below. ``PROMPTPILOT_FAST_STATEMENTS=false`` turns the statements off, and CI runs the
durability and orchestration tests both ways.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from promptpilot.common import metrics
from promptpilot.common.db import fetch_by_pk
from providers import pricing
from providers.types import TokenUsage

from ...engine import runner
from ...engine.retry import SlotDeferral, normalize_retry_config, retry_delay, slot_deferral
from ...engine.steps.map_step import settings_of as map_settings
from ...engine.types import RunContext, StepDefinition, StepResult, WorkflowDefinition
from ...errors import ExecutionFinished
from ...models import (
    ExecutionStatus,
    StepExecutionStatus,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVersion,
)
from ...signals import execution_finished, execution_waiting
from ..dispatch import enqueue_step, enqueue_wait_timer
from . import _postgres, map_items
from .types import Checkpointed, Claimed

__all__ = [
    "Checkpointed", "Claimed", "error_payload", "execution_begin", "execution_cancel", "execution_fail",
    "execution_time_out", "fast_statements", "step_checkpoint", "step_claim", "step_lease_expire",
    "step_resume", "version_snapshot", "workflow_admit_pending", "WAITING_OCCUPIES_SLOT",
]

logger = logging.getLogger(__name__)


def _conf(key: str) -> Any:
    return settings.PROMPTPILOT[key]


def fast_statements() -> bool:
    """Whether the PostgreSQL statements of ``_postgres`` carry the common cases."""
    return connection.vendor == "postgresql" and bool(_conf("FAST_STATEMENTS"))


@lru_cache(maxsize=512)
def version_snapshot(version_id: int) -> tuple[dict[str, Any], WorkflowDefinition]:
    """A pinned version's raw definition and its parsed form. Versions are immutable, so
    each process parses a definition once, not on every step."""
    raw = WorkflowVersion.objects.values_list("definition", flat=True).get(pk=version_id)
    return raw, WorkflowDefinition.from_dict(raw)


def _definition(execution: WorkflowExecution) -> WorkflowDefinition:
    return version_snapshot(execution.version_id)[1]


def error_payload(type_: str, message: str, step: str | None = None, details: dict | None = None) -> dict:
    return {"type": type_, "message": message, "step": step, "details": details or {}}


# --- admission: PENDING → RUNNING ------------------------------------------------------


def execution_begin(*, execution_id: uuid.UUID | str, worker: str, claim_first: bool) -> Claimed | None:
    """Start a PENDING execution if its workflow has a free slot (arrival order): RUNNING,
    its start and deadline fixed once, its first (or resumed) step created. With
    ``claim_first``, the first step may come back already claimed for the caller's task
    (else it is handed on through ``dispatch.enqueue_step``). Anything else (not PENDING,
    gone, no free slot) changes nothing."""
    if fast_statements():
        begun, first = _postgres.admit(
            execution_id, now=timezone.now(), worker=worker, lease_seconds=_conf("STEP_LEASE_SECONDS"),
            claim_next=claim_first, definition_of=version_snapshot)
        if begun:
            logger.info("execution.started", extra={"execution_id": str(execution_id)})
            return first
    # Capped workflow, resumed retry, not PENDING, or no fast statements.
    execution = WorkflowExecution.objects.select_related("workflow").filter(pk=execution_id).first()
    if execution is None:
        logger.info("execution.admit.missing", extra={"execution_id": str(execution_id)})
        return None
    if execution.status != ExecutionStatus.PENDING:
        return None
    if execution.workflow.max_concurrent_executions:
        workflow_admit_pending(workflow_id=execution.workflow_id)
        return None
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
    return None


WAITING_OCCUPIES_SLOT = {True: [ExecutionStatus.WAITING], False: []}


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
            # WAITING runs hold no worker: they take a slot only when the workflow says so.
            occupying = [ExecutionStatus.RUNNING, *WAITING_OCCUPIES_SLOT[workflow.concurrency_counts_waiting]]
            running = WorkflowExecution.objects.filter(workflow_id=workflow_id, status__in=occupying).count()
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
    raw = version_snapshot(execution.version_id)[0]
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


# --- an attempt: PENDING → RUNNING → COMPLETED / FAILED / PENDING (retry) ------------------


def step_claim(*, step_execution_id: uuid.UUID | str, attempt: int, worker: str) -> Claimed | None:
    """PENDING → RUNNING under this worker's lease, if the row is PENDING with this very
    ``attempt`` and its run RUNNING and before its deadline (a run past it fails as
    ``Timeout``). None when not claimed: a duplicate or late delivery changes nothing."""
    now = timezone.now()
    lease_seconds = _conf("STEP_LEASE_SECONDS")
    if fast_statements():
        claimed = _postgres.claim(step_execution_id, attempt, worker=worker, lease_seconds=lease_seconds, now=now)
        if claimed is not None:
            return claimed
    # Not claimable (the general code says why), or no fast statements.
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
            execution_time_out(execution=execution, running_step=step_execution)
            return None
        step_execution.status = StepExecutionStatus.RUNNING
        step_execution.lease_expires_at = now + timedelta(seconds=lease_seconds)
        step_execution.worker = worker
        step_execution.started_at = step_execution.started_at or now
        step_execution.save(update_fields=["status", "lease_expires_at", "worker", "started_at"])
    item_index = step_execution.item_index
    return Claimed(
        step_execution_id=str(step_execution.id), attempt=attempt, step_name=step_execution.step_name,
        execution_id=execution.id, workflow_id=execution.workflow_id, version_id=execution.version_id,
        step_tokens=step_execution.tokens or {}, context=_run_context(execution), item_index=item_index,
        item=(step_execution.input or {}).get("item") if item_index is not None else None,
    )


def _run_context(execution: WorkflowExecution) -> RunContext:
    steps: dict[str, dict[str, Any]] = {}
    done = (
        WorkflowStepExecution.objects.filter(
            execution_id=execution.id,
            # Skipped steps stay out of the context, as in previews: templates can test `is defined`.
            status__in=[StepExecutionStatus.COMPLETED, StepExecutionStatus.FAILED],
            item_index__isnull=True,  # a MAP step's items are not steps
        )
        .order_by("step_order")
        .values("step_name", "output", "outputs", "status")
    )
    for row in done:
        steps[row["step_name"]] = {"output": row["output"], "outputs": row["outputs"], "status": row["status"]}
    metadata = execution.metadata or {}
    trigger = {"type": execution.trigger_type, "payload": metadata.get("payload")}
    return RunContext(inputs=execution.input or {}, steps=steps, trigger=trigger)


def step_checkpoint(*, claimed: Claimed, result: StepResult, worker: str, claim_next: bool) -> Checkpointed:
    """Record an attempt's result, fenced: only while the row is still RUNNING with the
    claimed attempt (else the result is discarded with a warning: "rejected"). Then, in the
    same transaction: a retry (back to PENDING, ``attempt + 1``, sent with its backoff as a
    countdown), or the step's end and what follows it: skipped steps, the next step
    (``claim_next``: already claimed for the caller's task), or the run's end."""
    raw, definition = version_snapshot(claimed.version_id)
    step = definition.step(claimed.step_name)
    now = timezone.now()
    if fast_statements() and claimed.item_index is not None:  # a MAP item that is not the last one
        done = _postgres.checkpoint_item(claimed, result, concurrency=map_settings(step)["concurrency"],
                                         step_order=step.order, now=now, add_tokens=_add_tokens)
        if done is not None:
            _step_ended(step, result, done.outcome)
            return done
    elif fast_statements():
        done = _postgres.checkpoint(claimed, step, definition, result, raw_definition=raw, now=now, worker=worker,
                                    lease_seconds=_conf("STEP_LEASE_SECONDS"), claim_next=claim_next,
                                    add_tokens=_add_tokens)
        if done is not None:
            _step_ended(step, result, done.outcome)
            if done.finished:
                _after_finish(claimed.execution_id, claimed.workflow_id, ExecutionStatus.COMPLETED, capped=done.capped,
                              child=claimed.context.trigger.get("type") == "WORKFLOW")
            return done
    # Anything but a COMPLETED step going on, or no fast statements.
    outcome = _checkpoint(claimed.step_execution_id, claimed.attempt, step, definition, result, worker=worker, now=now)
    _step_ended(step, result, outcome)
    return Checkpointed(outcome=outcome)


def _step_ended(step: StepDefinition, result: StepResult, outcome: str) -> None:
    """The event of an attempt whose result was written: the step completed or failed (a
    retry is ``_schedule_retry``'s event, a discarded result ``_checkpoint``'s)."""
    if outcome != "checkpointed":
        return
    status = str(result.status).lower()
    metrics.STEP_ATTEMPTS_FINISHED.labels(step.type, status).inc()
    extra: dict[str, Any] = {"step_type": step.type, "tokens": (result.tokens or {}).get("total", 0)}
    if result.error:
        extra["error_type"] = result.error.get("type")
    logger.log(logging.WARNING if result.status == runner.FAILED else logging.INFO, f"step.{status}", extra=extra)


def _checkpoint(step_execution_id, attempt: int, step: StepDefinition, definition: WorkflowDefinition,
                result: StepResult, *, worker: str, now: datetime) -> str:
    with transaction.atomic():
        step_execution = WorkflowStepExecution.objects.select_for_update().get(pk=step_execution_id)
        if step_execution.attempt != attempt or step_execution.status != StepExecutionStatus.RUNNING:
            # Fencing: a newer attempt owns this step, or the run was cancelled.
            step_execution.warnings = [
                *step_execution.warnings,
                f"Late result of attempt {attempt} from {worker} discarded "
                f"(step is {step_execution.status}, attempt {step_execution.attempt}).",
            ]
            step_execution.save(update_fields=["warnings"])
            logger.warning("step.result_rejected", extra={"step_execution_id": str(step_execution_id),
                                                           "attempt": attempt})
            return "rejected"
        # NOTE: not its input: a MAP run's holds every item, and each item's checkpoint comes here.
        execution = (WorkflowExecution.objects.select_for_update().defer("input")
                     .get(pk=step_execution.execution_id))
        if execution.status != ExecutionStatus.RUNNING:
            step_execution.status = StepExecutionStatus.CANCELLED
            step_execution.completed_at = now
            step_execution.lease_expires_at = None
            step_execution.save(update_fields=["status", "completed_at", "lease_expires_at"])
            return "rejected"

        waiting_for_slot = step_execution.error  # a deferred step's wait so far (slot_deferral)
        if result.child is not None:
            result = _start_child(execution, step_execution, step, result)
        _record_attempt(step_execution, result)
        _add_tokens(execution, result)  # every attempt's model calls count, retried ones too
        if result.fan_out is not None:
            map_items.fan_out(execution, step_execution, step, definition, result, now)
            return "fanned-out"
        if result.status == runner.WAITING:
            _park(execution, step_execution, result, now)
            return "waiting"
        if result.status == runner.FAILED:
            deferral = slot_deferral(result, waiting_for_slot, now=now, max_wait=_conf("RATE_LIMIT_MAX_WAIT_SECONDS"))
            if deferral is not None:
                _defer_for_slot(step_execution, deferral, now)
                execution.save(update_fields=["aggregate_tokens", "warnings"])
                return "deferred"
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
        if step_execution.item_index is not None:
            map_items.item_done(execution, step_execution, step, definition, now)
            return "checkpointed"
        step_went_on(execution, step, definition, result, now)
    return "checkpointed"


def step_went_on(execution: WorkflowExecution, step: StepDefinition, definition: WorkflowDefinition,
                 result: StepResult, now: datetime) -> None:
    """After a step's final result is written (the caller holds the run's lock): the run
    goes on to its next step (recording the steps jumped over), or ends, or times out."""
    if execution.deadline_at and now >= execution.deadline_at:
        execution_time_out(execution=execution, running_step=None)
        return
    transition = runner.next_transition(definition, step, result)
    if transition.fail_run:
        _finish(execution, ExecutionStatus.FAILED, error=result.error)
        return
    for skipped in transition.skipped:
        _record_skipped(execution, skipped, now)
    if transition.next_step is not None:
        execution.save(update_fields=["aggregate_tokens", "warnings"])
        _schedule_step(execution, transition.next_step)
    else:
        _finish(execution, ExecutionStatus.COMPLETED, output=result.output)


def _start_child(execution: WorkflowExecution, step_execution: WorkflowStepExecution, step: StepDefinition,
                 result: StepResult) -> StepResult:
    """A WORKFLOW step's child run, started through ``execution_start`` in the transaction
    that parks the step (so the child exists if and only if the parent waits for it). The
    child must be a workflow of the same owner, within the depth limit, with valid input;
    otherwise the step fails with the reason (and ``on_error`` applies)."""
    from ...engine.errors import ConfigError
    from ...engine.steps.base import failed
    from ...errors import InputValidationFailed, WorkflowInactive
    from ...models import TriggerType
    from ..executions import execution_start

    wanted = result.child or {}
    owner_id = Workflow.objects.filter(pk=execution.workflow_id).values_list("owner_id", flat=True).first()
    child_workflow = Workflow.objects.filter(pk=wanted.get("workflow"), owner_id=owner_id).first()
    depth = int((execution.metadata or {}).get("workflow_depth") or 0) + 1
    limit = int(_conf("WORKFLOW_MAX_DEPTH"))
    problem = None
    if child_workflow is None:
        problem = f"Workflow {wanted.get('workflow')} is not one of the owner's workflows (or was deleted)."
    elif depth > limit:
        problem = (f"Too deeply nested: this child would be {depth} levels down and "
                   f"PROMPTPILOT_WORKFLOW_MAX_DEPTH is {limit} (does a workflow start itself?).")
    else:
        try:
            child = execution_start(
                workflow=child_workflow, inputs=wanted.get("input") or {}, trigger_type=TriggerType.WORKFLOW,
                started_by=execution.started_by, parent_execution=execution, parent_step=step_execution,
                metadata={"workflow_depth": depth, "parent_execution": str(execution.id), "parent_step": step.name},
            )
        except (InputValidationFailed, WorkflowInactive) as exc:
            problem = f"The child workflow {child_workflow.pk} could not start: {exc.message}"
    if problem is not None:
        return failed(step, ConfigError(problem, details={"workflow": wanted.get("workflow")}), input=result.input)
    result.output = {**(result.output or {}), "execution": str(child.id)}
    result.child = None
    return result


def child_finished(*, execution_id) -> WorkflowStepExecution | None:
    """A child run ended: resume its parent's WORKFLOW step with the child's status and
    output (fenced: a parent that no longer waits, e.g. cancelled, changes nothing). Called
    after the child's end commits, and by the reaper for ends whose call was lost."""
    child = (WorkflowExecution.objects.filter(pk=execution_id)
             .values("id", "status", "output", "error", "parent_step_id").first())
    if child is None or not child["parent_step_id"] or child["status"] not in ExecutionStatus.finished():
        return None
    decision = {"child": {"execution": str(child["id"]), "status": child["status"], "output": child["output"],
                          "error": child["error"]}}

    def check(row: WorkflowStepExecution, step: StepDefinition) -> None:
        if row.step_type != "WORKFLOW":
            raise ValueError("not a WORKFLOW step")

    return step_resume(step_execution_id=child["parent_step_id"], decision=decision, check=check)


def _park(execution: WorkflowExecution, step_execution: WorkflowStepExecution, result: StepResult,
          now: datetime) -> None:
    """RUNNING → WAITING for the step and its run (the caller holds both locks): the attempt
    has ended, nothing runs, no lease is held. The database keeps when the wait ends
    (``available_at``); a countdown message is only the fast path (``enqueue_wait_timer``,
    for waits that end within the broker's countdown limit), the reaper the backstop."""
    step_execution.status = StepExecutionStatus.WAITING
    step_execution.lease_expires_at = None
    step_execution.available_at = result.wait_until
    step_execution.save()
    execution.status = ExecutionStatus.WAITING
    execution.save(update_fields=["status", "aggregate_tokens", "warnings"])
    if result.wait_until is not None:
        enqueue_wait_timer(step_execution.id, countdown=max((result.wait_until - now).total_seconds(), 0))
    workflow = Workflow.objects.filter(pk=execution.workflow_id).values(
        "max_concurrent_executions", "concurrency_counts_waiting").first() or {}
    if workflow.get("max_concurrent_executions") and not workflow.get("concurrency_counts_waiting"):
        transaction.on_commit(lambda: workflow_admit_pending(workflow_id=execution.workflow_id))  # a slot is free
    step_execution_id = step_execution.id
    transaction.on_commit(lambda: _announce_waiting(step_execution_id))
    logger.info("step.waiting", extra={"execution_id": str(execution.id), "step_execution_id": str(step_execution.id),
                                       "until": result.wait_until.isoformat() if result.wait_until else None})


def _announce_waiting(step_execution_id) -> None:
    step_execution = WorkflowStepExecution.objects.select_related("execution__workflow").filter(pk=step_execution_id).first()
    if step_execution is not None:
        try:
            execution_waiting.send(sender=WorkflowExecution, execution=step_execution.execution,
                                   step_execution=step_execution)
        except Exception:
            logger.exception("execution.waiting_handler_failed", extra={"step_execution_id": str(step_execution_id)})


def step_resume(*, step_execution_id: uuid.UUID | str, decision: dict[str, Any],
                check: Callable[[WorkflowStepExecution, StepDefinition], None] | None = None,
                now: datetime | None = None) -> WorkflowStepExecution | None:
    """End a wait: WAITING → the step's final result (the handler's ``resume`` given
    ``decision``), the run RUNNING again and on to its next step (a PENDING row sent after
    commit, re-sent by the reaper if that message is lost) or to its end, all in one
    transaction. Fenced like a checkpoint: only while the step and its run are WAITING (a
    late or duplicate resume, or one after cancel, changes nothing and answers None); a
    timer (``{"timer": true}``) only once the wait's time has come. ``check(row, step)``
    may refuse (raise) under the lock, e.g. a decision on a step that is not an approval."""
    now = now or timezone.now()
    with transaction.atomic():
        step_execution = (WorkflowStepExecution.objects.select_for_update()
                          .filter(pk=step_execution_id).order_by("pk").first())
        if step_execution is None or step_execution.status != StepExecutionStatus.WAITING:
            return None
        execution = WorkflowExecution.objects.select_for_update().get(pk=step_execution.execution_id)
        if execution.status != ExecutionStatus.WAITING:
            return None
        if decision.get("timer") and (step_execution.available_at is None or step_execution.available_at > now):
            return None  # early (clock skew) or the wait has no end of its own
        definition = _definition(execution)
        step = definition.step(step_execution.step_name)
        if check is not None:
            check(step_execution, step)
        waited = StepResult(status=runner.WAITING, input=step_execution.input or {}, output=step_execution.output)
        result = runner.resume_step(step, waited, decision)
        # The resume is the step's next attempt: RUNNING under a new number, so the
        # checkpoint's fencing applies to it as to any attempt.
        execution.status = ExecutionStatus.RUNNING
        execution.save(update_fields=["status"])
        step_execution.status = StepExecutionStatus.RUNNING
        step_execution.attempt += 1
        step_execution.save(update_fields=["status", "attempt"])
        _checkpoint(step_execution.id, step_execution.attempt, step, definition, result, worker="resume", now=now)
    logger.info("step.resumed", extra={"execution_id": str(execution.id), "step_execution_id": str(step_execution_id),
                                       "timer": bool(decision.get("timer"))})
    step_execution.refresh_from_db()
    return step_execution


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
    reason = str(error.get("type") or "unknown")
    metrics.STEP_RETRIES.labels(reason).inc()
    logger.info("step.retrying", extra={"reason": reason, "next_attempt": step_execution.attempt,
                                        "delay_seconds": round(delay, 3)})


def _defer_for_slot(step_execution: WorkflowStepExecution, deferral: SlotDeferral, now) -> None:
    """Back to PENDING with a new attempt number (a message's fencing token) but the same
    ``retry_count``: waiting for a shared rate-limit slot is not a failure of the step."""
    step_execution.error = deferral.error(step_execution.error or {})
    provider = (step_execution.error.get("details") or {}).get("provider", "its provider")
    note = f"Waiting for a slot in the shared rate limit of {provider}"
    step_execution.warnings = [
        *(w for w in step_execution.warnings if not w.startswith(note)),
        f"{note} since {deferral.waiting_since:%H:%M:%S} ({deferral.deferrals} tries deferred, "
        "no worker held meanwhile).",
    ]
    step_execution.status = StepExecutionStatus.PENDING
    step_execution.attempt += 1
    step_execution.lease_expires_at = None
    step_execution.available_at = now + timedelta(seconds=deferral.delay)
    step_execution.save()
    enqueue_step(step_execution.id, step_execution.attempt, countdown=deferral.delay)
    metrics.STEP_SLOT_DEFERRALS.labels(provider).inc()
    logger.info("step.deferred", extra={"provider": provider, "deferrals": deferral.deferrals,
                                        "next_attempt": step_execution.attempt, "delay_seconds": round(deferral.delay, 3)})


def _record_skipped(execution: WorkflowExecution, step: StepDefinition, now) -> None:
    WorkflowStepExecution.objects.get_or_create(
        execution=execution,
        step_order=step.order,
        item_index=None,
        defaults={
            "step_name": step.name,
            "step_type": step.type,
            "status": StepExecutionStatus.SKIPPED,
            "retry_config": normalize_retry_config(step.retry_config),
            "completed_at": now,
        },
    )


def _add_tokens(execution, result: StepResult) -> None:
    """Add an attempt's tokens, cost and warnings to its run (an execution, or the run
    totals the PostgreSQL checkpoint reads): the one place run totals are counted."""
    previous = execution.aggregate_tokens or {}
    execution.aggregate_tokens = {
        **(TokenUsage.from_raw(previous) + TokenUsage.from_raw(result.tokens)).as_dict(),
        # null as soon as one model call had no price (providers/pricing.py)
        "cost_usd": pricing.add_costs(previous.get("cost_usd", 0), pricing.sum_costs(result.model_outputs)),
    }
    if result.warnings:
        execution.warnings = [*execution.warnings, *result.warnings]


def step_lease_expire(*, step_execution: WorkflowStepExecution, now: datetime) -> bool:
    """A RUNNING attempt whose lease expired lost its worker (the caller holds the row's
    lock): ``lost_attempts + 1`` and back to PENDING with ``attempt + 1`` (fencing the lost
    worker off), sent again; or, after ``MAX_LOST_ATTEMPTS``, the step and its run fail as
    ``WorkerLost``. Answers whether it failed for good."""
    step_execution.lost_attempts += 1
    lost = f"Attempt {step_execution.attempt} lost its worker ({step_execution.worker or 'unknown'}): lease expired."
    step_execution.warnings = [*step_execution.warnings, lost]
    step_execution.lease_expires_at = None
    step_execution.attempt += 1  # fencing: the old attempt can no longer write
    if step_execution.lost_attempts >= _conf("MAX_LOST_ATTEMPTS"):
        error = error_payload(
            "WorkerLost",
            f"The worker running step \"{step_execution.step_name}\" was lost {step_execution.lost_attempts} "
            "times; the step is failed instead of being retried forever.",
            step_execution.step_name,
            {"lost_attempts": step_execution.lost_attempts, "last_worker": step_execution.worker},
        )
        step_execution.status = StepExecutionStatus.FAILED
        step_execution.error = error
        step_execution.completed_at = now
        step_execution.save()
        metrics.STEP_ATTEMPTS_FINISHED.labels(step_execution.step_type, "failed").inc()
        logger.warning("step.failed", extra=_lost_ids(step_execution, error_type="WorkerLost"))
        execution = WorkflowExecution.objects.select_for_update().get(pk=step_execution.execution_id)
        if execution.status == ExecutionStatus.RUNNING:
            if step_execution.item_index is not None:  # a MAP item: its on_item_error decides
                definition = _definition(execution)
                map_items.item_done(execution, step_execution, definition.step(step_execution.step_name),
                                    definition, now)
            else:
                execution_fail(execution=execution, error=error)
        return True
    step_execution.status = StepExecutionStatus.PENDING
    step_execution.available_at = now
    step_execution.save()
    enqueue_step(step_execution.id, step_execution.attempt)
    metrics.STEP_RETRIES.labels("WorkerLost").inc()
    logger.warning("step.retrying", extra=_lost_ids(step_execution, reason="WorkerLost",
                                                    next_attempt=step_execution.attempt))
    return False


def _lost_ids(step_execution: WorkflowStepExecution, **more: Any) -> dict[str, Any]:
    # The reaper holds no step's log context: name the step here.
    return {"execution_id": str(step_execution.execution_id), "step": step_execution.step_name,
            "attempt": step_execution.attempt - 1, "step_type": step_execution.step_type,
            "last_worker": step_execution.worker, **more}


# --- endings: RUNNING → COMPLETED / FAILED / CANCELLED ----------------------------------


def _finish(execution: WorkflowExecution, status: str, *, output: Any = None, error: dict | None = None) -> None:
    execution.status = status
    execution.completed_at = timezone.now()
    if status == ExecutionStatus.COMPLETED:
        execution.output = output
    execution.error = error
    execution.save()
    _after_finish(execution.id, execution.workflow_id, status, error_type=(error or {}).get("type"),
                  child=execution.parent_step_id is not None)


def _after_finish(execution_id, workflow_id: int, status: str, *, capped: bool | None = None,
                  error_type: str | None = None, child: bool = False) -> None:
    """Once the run's end commits: free its slot for the oldest waiting run, resume the
    parent of a child run, tell the receivers; and the run's event (``execution.completed``,
    ``.failed``, ``.cancelled``). ``capped``: whether the workflow has a cap, when the
    caller read it already."""
    if child:
        transaction.on_commit(lambda: _resume_parent(execution_id))
    if capped is None:
        capped = bool(Workflow.objects.filter(pk=workflow_id).values_list("max_concurrent_executions",
                                                                          flat=True).first())
    if capped:  # a slot is free now: start the oldest waiting run
        transaction.on_commit(lambda: workflow_admit_pending(workflow_id=workflow_id))
    transaction.on_commit(lambda: _announce_finished(execution_id))
    metrics.EXECUTIONS_FINISHED.labels(status).inc()
    extra = {"execution_id": str(execution_id), "workflow_id": workflow_id, "status": status}
    if error_type:
        extra["error_type"] = error_type
    logger.log(logging.WARNING if status == ExecutionStatus.FAILED else logging.INFO,
               f"execution.{str(status).lower()}", extra=extra)


# What the execution_finished receivers read (triggers: platform events, schedules); a
# receiver that reads more loads it on access. Leaving out input, output, metadata and the
# tokens spares every run's end decoding its largest JSON columns.
ANNOUNCED_FIELDS = ("id", "status", "workflow_id", "trigger_id", "trigger_type", "error", "completed_at")


def _resume_parent(execution_id) -> None:
    try:
        child_finished(execution_id=execution_id)
    except Exception:  # the reaper resumes it later
        logger.exception("execution.parent_resume_failed", extra={"execution_id": str(execution_id)})


def _announce_finished(execution_id) -> None:
    execution = fetch_by_pk(WorkflowExecution, execution_id, ANNOUNCED_FIELDS)
    if execution is not None:
        try:
            execution_finished.send(sender=WorkflowExecution, execution=execution)
        except Exception:
            logger.exception("execution.finished_handler_failed", extra={"execution_id": str(execution_id)})


UNFINISHED_STEP_STATUSES = (StepExecutionStatus.PENDING, StepExecutionStatus.RUNNING, StepExecutionStatus.WAITING)


def _cancel_unfinished_steps(execution: WorkflowExecution) -> None:
    WorkflowStepExecution.objects.filter(
        execution_id=execution.id, status__in=UNFINISHED_STEP_STATUSES
    ).update(status=StepExecutionStatus.CANCELLED, completed_at=timezone.now(), lease_expires_at=None)


def execution_time_out(*, execution: WorkflowExecution, running_step: WorkflowStepExecution | None) -> None:
    """A run past its workflow's ``timeout_seconds`` fails as ``Timeout`` (the caller holds
    its lock); its unfinished steps are CANCELLED and a late result is discarded."""
    timeout = _definition(execution).timeout_seconds
    step_name = running_step.step_name if running_step else None
    _cancel_unfinished_steps(execution)
    _cancel_children(execution, None)
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
    """Fail a run from outside a step attempt (the reaper: WorkerLost)."""
    _cancel_unfinished_steps(execution)
    _finish(execution, ExecutionStatus.FAILED, error=error)


def execution_cancel(*, execution: WorkflowExecution, user=None) -> WorkflowExecution:
    """Cancel a PENDING, RUNNING or WAITING execution: no further step starts, a late result
    is discarded, a wait ends (a later decision or timer is a no-op).
    Raises ExecutionFinished (409) when the run has already ended."""
    with transaction.atomic():
        locked = WorkflowExecution.objects.select_for_update().get(pk=execution.pk)
        if locked.is_finished:
            raise ExecutionFinished(
                f"This execution already ended {locked.status}; only PENDING, RUNNING or WAITING executions "
                "can be cancelled.",
                {"status": locked.status},
            )
        running = (
            WorkflowStepExecution.objects.filter(
                execution=locked, status__in=UNFINISHED_STEP_STATUSES
            ).order_by("step_order").values_list("step_name", flat=True).first()
        )
        _cancel_unfinished_steps(locked)
        who = getattr(user, "username", None) or "system"
        _finish(locked, ExecutionStatus.CANCELLED,
                error=error_payload("Cancelled", f"Cancelled by {who}.", running, {}))
        _cancel_children(locked, user)
    return locked


def _cancel_children(execution: WorkflowExecution, user) -> None:
    """Cancelling (or timing out) a parent cancels its unfinished child runs, and theirs."""
    children = WorkflowExecution.objects.filter(
        parent_execution_id=execution.pk,
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING, ExecutionStatus.WAITING])
    for child in children.order_by("pk"):
        try:
            execution_cancel(execution=child, user=user)
        except ExecutionFinished:  # it ended meanwhile
            pass
