"""A MAP step's items: the fan-out and the join, parts of the checkpoint transition.

``fan_out``: the MAP step's own attempt evaluated its items; one PENDING step execution
per item is created (``item_index``, the item in its ``input``, the inner step's
``retry_config``), and the first ``concurrency`` of them are sent. The MAP row stays
RUNNING without a lease (nothing runs it; the reaper leaves it alone) and its attempt is
bumped, so the attempt that fanned out can write nothing more.

Items are then claimed, leased, retried, fenced and checkpointed like any step, by the
same functions. ``item_done``: an item's final result was written; send the next items
while fewer than ``concurrency`` are in flight, and when none is left, complete the MAP
step and move the run on. Both run under the run's row lock, which every checkpoint
takes, so two items finishing at once on two workers are serialised: exactly one of
them sees the last item done and moves the run on.

An item row is "dispatched" once its ``available_at`` is set: the reaper re-sends only
PENDING rows whose ``available_at`` passed, so items not yet sent stay put.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from providers import pricing
from providers.types import TokenUsage

from ...engine import runner
from ...engine.retry import normalize_retry_config
from ...engine.steps.map_step import inner_step, map_result, settings_of
from ...engine.types import FAILED, StepDefinition, StepResult, WorkflowDefinition
from ...models import StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from ..dispatch import enqueue_step

logger = logging.getLogger(__name__)
UNFINISHED = (StepExecutionStatus.PENDING, StepExecutionStatus.RUNNING)


def items_of(parent: WorkflowStepExecution):
    """The item rows of a MAP step's row (any status)."""
    return WorkflowStepExecution.objects.filter(execution_id=parent.execution_id, step_order=parent.step_order,
                                                item_index__isnull=False)


def fan_out(execution: WorkflowExecution, parent: WorkflowStepExecution, step: StepDefinition,
            definition: WorkflowDefinition, result: StepResult, now: datetime) -> None:
    """Create the items' rows and send the first ``concurrency`` (the caller holds the locks)."""
    inner = inner_step(step)
    concurrency = settings_of(step)["concurrency"]
    retry_config = normalize_retry_config(inner.retry_config)
    parent.status = StepExecutionStatus.RUNNING
    parent.attempt += 1  # fencing: the attempt that fanned out is over
    parent.lease_expires_at = None
    parent.save()
    execution.save(update_fields=["aggregate_tokens", "warnings"])
    items = result.fan_out or []
    kept = _reused_items(parent, items)
    to_run = [(index, item) for index, item in enumerate(items) if index not in kept]
    rows = WorkflowStepExecution.objects.bulk_create([
        WorkflowStepExecution(
            execution_id=execution.id, step_id=parent.step_id, step_name=parent.step_name,
            step_order=parent.step_order, step_type=inner.type, item_index=index,
            status=StepExecutionStatus.PENDING, input={"item": item, "index": index}, retry_config=retry_config,
            attempt=1, available_at=now if position < concurrency else None,
        )
        for position, (index, item) in enumerate(to_run)
    ])
    for row in rows[:concurrency]:
        enqueue_step(row.id, row.attempt)
    logger.info("step.fanned_out", extra={"execution_id": str(execution.id), "step": step.name,
                                          "items": len(items), "reused": len(kept), "concurrency": concurrency})
    if not rows:  # every item was done already (a retry's): the step is complete now
        _join(execution, parent, step, definition, now)


def _reused_items(parent: WorkflowStepExecution, items: list[Any]) -> set[int]:
    """The indexes of items a retry copied as COMPLETED from the run it retries, kept when
    the item at that index is still the same; any other copy is removed (it runs again)."""
    copies = list(items_of(parent).values_list("pk", "item_index", "input"))
    kept = {index for _, index, given in copies
            if index < len(items) and (given or {}).get("item") == items[index]}
    stale = [pk for pk, index, _ in copies if index not in kept]
    if stale:
        WorkflowStepExecution.objects.filter(pk__in=stale).delete()
    return kept


def item_done(execution: WorkflowExecution, item: WorkflowStepExecution, step: StepDefinition,
              definition: WorkflowDefinition, now: datetime) -> None:
    """An item ended COMPLETED or FAILED for good (the caller holds the run's lock)."""
    execution.save(update_fields=["aggregate_tokens", "warnings"])  # this item's tokens, added by the checkpoint
    if item.status == StepExecutionStatus.FAILED and settings_of(step)["on_item_error"] == "fail":
        # The step fails with this item: the items still to run never will.
        items_of(item).filter(status__in=UNFINISHED).update(
            status=StepExecutionStatus.CANCELLED, completed_at=now, lease_expires_at=None)
    elif _send_next(item, step, now):
        return  # items are still running or to be run
    parent = (WorkflowStepExecution.objects.select_for_update()
              .filter(execution_id=execution.id, step_order=item.step_order, item_index__isnull=True)
              .order_by("pk").first())
    if parent is None or parent.status != StepExecutionStatus.RUNNING:
        return  # already completed by the item that ended first (a fail), or cancelled
    _join(execution, parent, step, definition, now)


def _join(execution: WorkflowExecution, parent: WorkflowStepExecution, step: StepDefinition,
          definition: WorkflowDefinition, now: datetime) -> None:
    """Every item ended: complete (or fail) the MAP step and move the run on."""
    from . import step_went_on

    result = _joined(step, parent)
    parent.status = result.status
    parent.output = result.output
    parent.error = result.error
    parent.tokens = result.tokens
    parent.warnings = [*parent.warnings, *result.warnings]
    parent.completed_at = now
    parent.save()
    if result.warnings:
        execution.warnings = [*execution.warnings, *(f"{step.name}: {w}" for w in result.warnings)]
    step_went_on(execution, step, definition, result, now)


def _send_next(item: WorkflowStepExecution, step: StepDefinition, now: datetime) -> bool:
    """Send items not yet sent while fewer than ``concurrency`` are in flight (RUNNING, or
    PENDING once sent: a retry's backoff keeps its slot). Answers whether any item of the
    step is still unfinished (then the step is not done yet)."""
    counts = items_of(item).aggregate(
        in_flight=Count("pk", filter=Q(status=StepExecutionStatus.RUNNING)
                        | Q(status=StepExecutionStatus.PENDING, available_at__isnull=False)),
        unfinished=Count("pk", filter=Q(status__in=UNFINISHED)))
    free = settings_of(step)["concurrency"] - counts["in_flight"]
    if free > 0 and counts["unfinished"] > counts["in_flight"]:
        # Rows never sent are still at attempt 1.
        waiting = list(items_of(item).filter(status=StepExecutionStatus.PENDING, available_at__isnull=True)
                       .order_by("item_index").values_list("pk", flat=True)[:free])
        WorkflowStepExecution.objects.filter(pk__in=waiting).update(available_at=now)
        for pk in waiting:
            enqueue_step(pk, 1)
    return counts["unfinished"] > 0


def _joined(step: StepDefinition, parent: WorkflowStepExecution) -> StepResult:
    """The MAP step's result from its items' rows: outputs in item order, tokens and cost
    summed (the cost in ``tokens.cost_usd``: the items' model calls are theirs, already
    counted in the run's totals)."""
    rows = list(items_of(parent).filter(status__in=[StepExecutionStatus.COMPLETED, StepExecutionStatus.FAILED])
                .values_list("item_index", "status", "output", "error", "tokens", "model_outputs"))
    entries: list[tuple[int, str, Any, dict | None, dict]] = [row[:5] for row in rows]
    result = map_result(step, entries, input=parent.input or {})
    cost = pricing.add_costs(0, pricing.sum_costs([m for row in rows for m in (row[5] or [])]))
    result.tokens = {**TokenUsage.from_raw(result.tokens).as_dict(), "cost_usd": cost}
    if result.status == FAILED:
        result = runner.with_on_error(step, result)
    return result

