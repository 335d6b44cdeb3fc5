"""Execution lifecycle: start, cancel, retry. Views, tasks, triggers and admin call these."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from promptpilot.common import metrics
from promptpilot.common.db import run_prepared
from providers.types import TokenUsage

from ..engine.errors import InputValidationError
from ..engine.inputs import validate_inputs
from ..errors import ExecutionNotRetryable, InputValidationFailed, WorkflowInactive
from ..models import (
    ExecutionStatus,
    StepExecutionStatus,
    StepType,
    TriggerType,
    Workflow,
    WorkflowExecution,
    WorkflowStepExecution,
)
from .definitions import workflow_current_version, workflow_version_variables
from .dispatch import enqueue_execution
from .transitions import execution_cancel

__all__ = ["WorkflowGuard", "execution_cancel", "execution_retry", "execution_start"]  # cancel is a transition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkflowGuard:
    """A condition the database checks in the statement that writes an execution (PostgreSQL).

    ``sql`` is a sub-query (``%s`` placeholders, ``params``) answering the new execution's
    ``workflow_id``; it answers NULL when what the caller remembered no longer holds (e.g.
    the webhook receiver's cached trigger changed), and then the NOT NULL column refuses
    the row: nothing is written and ``execution_start`` raises IntegrityError, so the
    caller can go its full way. It saves the caller a read before every write.
    """

    sql: str
    params: tuple[Any, ...]


def execution_start(
    *,
    workflow: Workflow,
    inputs: dict[str, Any] | None,
    trigger=None,
    trigger_type: str = TriggerType.MANUAL,
    started_by=None,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
    version_id: int | None = None,
    retry_of: WorkflowExecution | None = None,
    along: Callable[[WorkflowExecution], Sequence[models.Model]] | None = None,
    guard: WorkflowGuard | None = None,
    parent_execution: WorkflowExecution | None = None,
    parent_step: WorkflowStepExecution | None = None,
) -> WorkflowExecution:
    """Validate inputs, create a PENDING execution pinned to the current version and
    enqueue it after commit. Raises InputValidationFailed (400) / WorkflowInactive (409).
    With an already used ``idempotency_key`` returns the first execution, with
    ``execution.was_replayed = True`` (False otherwise).

    ``version_id``: the version to pin when the caller has just read the latest one (the
    webhook receiver reads it with the trigger) or a retry follows its original's; default:
    the latest. ``along(execution)`` returns rows (e.g. the trigger's invocation, a retry's
    reused steps) written in the same statement as the execution, so they commit together
    or not at all. ``guard``: the database re-checks what the caller read from a cache
    (see WorkflowGuard); a broken connection is then closed and raised, for the caller to
    go its full way. ``parent_execution`` / ``parent_step``: the run and the WORKFLOW step
    that start this one as their child. Every execution is created here, whatever started it.
    """
    if idempotency_key:
        existing = WorkflowExecution.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if existing is not None:
            existing.was_replayed = True
            return existing
    if not workflow.is_active:
        raise WorkflowInactive(
            f'Workflow "{workflow.name}" is inactive; set is_active to true before executing it.',
            {"workflow": workflow.pk},
        )
    version = workflow_current_version(workflow=workflow) if version_id is None else None
    version_id = version.pk if version is not None else version_id
    try:
        validated = validate_inputs(list(workflow_version_variables(version_id=version_id)),
                                    inputs if inputs is not None else {})
    except InputValidationError as exc:
        raise InputValidationFailed(
            "The input is invalid: " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items()),
            {"errors": exc.errors},
        ) from None
    execution = WorkflowExecution(
        workflow=workflow,
        version_id=version_id,
        trigger=trigger,
        trigger_type=trigger_type,
        status=ExecutionStatus.PENDING,
        input=validated,
        metadata=metadata or {},
        aggregate_tokens=TokenUsage().as_dict(),
        idempotency_key=idempotency_key or None,
        started_by=started_by,
        retry_of=retry_of,
        parent_execution=parent_execution,
        parent_step=parent_step,
        enqueued_at=timezone.now(),
    )
    if version is not None:
        execution.version = version  # already read: serializers need not read it again
    try:
        # One statement is atomic on its own (no BEGIN/COMMIT round trips); inside a caller's
        # transaction, a savepoint lets the caller go on after an IntegrityError.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            _insert_together([execution, *(along(execution) if along else ())], guard=guard)
            # NOTE: sent only after commit, so a worker never looks for a row that is not there yet.
            enqueue_execution(execution.id)
    except IntegrityError:
        existing = (WorkflowExecution.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
                    if idempotency_key else None)
        if existing is None:  # not the idempotency key (e.g. a row written ``along``): the caller decides
            raise
        # Two requests raced with the same key: the other one won; answer with its run.
        existing.was_replayed = True
        return existing
    execution.was_replayed = False
    metrics.EXECUTIONS_CREATED.labels(trigger_type).inc()
    logger.info("execution.created", extra={"execution_id": str(execution.id), "workflow_id": workflow.pk,
                                            "trigger_type": trigger_type})
    return execution


@lru_cache(maxsize=32)
def _insert_sql(model: type[models.Model], guarded: str | None = None) -> tuple[str, tuple[models.Field, ...]]:
    """The model's INSERT and the fields whose values it takes; with ``guarded`` (a
    WorkflowGuard's sub-query), ``workflow_id`` is that sub-query and not a value."""
    fields = tuple(f for f in model._meta.local_concrete_fields if not (guarded and f.attname == "workflow_id"))
    quote = connection.ops.quote_name
    columns = [quote(f.column) for f in fields]
    values = ["%s"] * len(fields)
    if guarded:
        columns.append(quote(model._meta.get_field("workflow").column))
        values.append(guarded)
    return (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) VALUES ({', '.join(values)})",
            fields)


def _insert_together(rows: Sequence[models.Model], *, guard: WorkflowGuard | None = None) -> None:
    """INSERT ``rows`` (primary keys set in Python, e.g. UUIDs) in ONE statement: atomic on
    its own and one round trip. Values go through each field's own pre_save/prep (defaults,
    auto_now_add, JSON adaptation), as ``Model.objects.create`` would; it sends no signals.

    Why not the ORM: a webhook delivery is two rows; two ORM INSERTs in a transaction took
    ~0.67 ms of CPU and four round trips, this ~0.37 ms and one (bench/README.md,
    "Webhooks benchmark").
    """
    db = transaction.get_connection()  # the wrapper itself: ``connection`` is a proxy, slow to read 30 times
    statements: list[tuple[str, list]] = []
    for index, row in enumerate(rows):
        if row.pk is None:
            raise ValueError(f"{type(row).__name__} needs its primary key set before _insert_together.")
        guarded = guard.sql if guard is not None and index == 0 else None  # the execution's row
        sql, fields = _insert_sql(type(row), guarded)
        values = [f.get_db_prep_save(f.pre_save(row, True), db) for f in fields]
        statements.append((sql, values + list(guard.params) if guarded else values))
    if db.vendor == "postgresql":
        *first, last = [sql for sql, _ in statements]
        sql = (f"WITH {', '.join(f'_row{i} AS ({s})' for i, s in enumerate(first))} {last}") if first else last
        run_prepared(sql, [value for _, values in statements for value in values], caller_recovers=guard is not None)
    elif guard is not None:
        raise ValueError("A WorkflowGuard needs PostgreSQL (INSERTs inside WITH).")
    else:  # INSERTs inside WITH are PostgreSQL's: elsewhere (SQLite) one INSERT per row, in one transaction
        with transaction.atomic(using=db.alias), db.cursor() as cursor:
            for sql, values in statements:
                cursor.execute(sql, values)
    for row in rows:
        row._state.adding = False
        row._state.db = db.alias


def execution_retry(*, execution: WorkflowExecution, user=None) -> WorkflowExecution:
    """Start a new execution (trigger_type RETRY) from the failed step of a FAILED or
    CANCELLED one, reusing the outputs of the steps before it (no model call repeated).
    It follows the same pinned version as the original. Raises ExecutionNotRetryable (409)."""
    if execution.status not in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
        raise ExecutionNotRetryable(
            f"Only FAILED or CANCELLED executions can be retried; this one is {execution.status}.",
            {"status": execution.status},
        )
    # A reused MAP step keeps its output (its items are not copied).
    step_runs = list(execution.step_executions.filter(item_index__isnull=True).order_by("step_order"))
    failed_name = (execution.error or {}).get("step")
    resume = next((s for s in step_runs if s.step_name == failed_name), None)
    if resume is None:
        resume = next((s for s in step_runs if s.status not in (StepExecutionStatus.COMPLETED,
                                                                  StepExecutionStatus.SKIPPED)), None)
    reused = [s for s in step_runs if resume is None or s.step_order < resume.step_order]
    if resume is not None and resume.step_type == StepType.MAP:
        # The MAP step it resumes from keeps its completed items: only the others run
        # again (its fan-out re-checks that each is still the same item).
        reused += list(execution.step_executions.filter(step_order=resume.step_order, item_index__isnull=False,
                                                        status=StepExecutionStatus.COMPLETED))

    def copies_of_reused_steps(retry: WorkflowExecution) -> list[WorkflowStepExecution]:
        return [
            WorkflowStepExecution(
                execution=retry, step_id=s.step_id, step_name=s.step_name, step_order=s.step_order,
                step_type=s.step_type, item_index=s.item_index, status=s.status, input=s.input, output=s.output,
                outputs=s.outputs, error=s.error, retry_count=s.retry_count, retry_config=s.retry_config,
                model_outputs=s.model_outputs, tokens=s.tokens, warnings=s.warnings, attempt=s.attempt,
                reused_from=s, started_at=s.started_at, completed_at=s.completed_at,
            )
            for s in reused
        ]

    return execution_start(
        workflow=execution.workflow, inputs=execution.input, trigger=execution.trigger,
        trigger_type=TriggerType.RETRY, started_by=user, version_id=execution.version_id, retry_of=execution,
        metadata={**(execution.metadata or {}), "retry_of": str(execution.id),
                  "resume_from": resume.step_name if resume else None},
        along=copies_of_reused_steps,
    )
