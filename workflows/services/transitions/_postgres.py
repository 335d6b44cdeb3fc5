"""PostgreSQL statements for the commonest transitions: the body of ``transitions``'
functions on PostgreSQL, never called from anywhere else.

Admitting a run, claiming an attempt and checkpointing a COMPLETED step happen for every
run and every step, so on PostgreSQL they are a few hand-written statements rather than
ORM round trips:

- admission of a run of an uncapped workflow: one ``UPDATE … RETURNING`` (status, start,
  deadline from the pinned version's timeout) and the first step's ``INSERT``;
- the claim: one conditional ``UPDATE … RETURNING`` (same attempt, step PENDING, run
  RUNNING and before its deadline) that also returns the run context, in autocommit;
- the checkpoint of a COMPLETED step: one transaction that locks the run (as cancel
  does), then in one statement adds the step's tokens to the run (finishing it on the last
  step), writes the step under the same fencing condition (same attempt, still RUNNING)
  and inserts the next step: PENDING, or already claimed by this worker when the task goes
  on with it (``dispatch.continuation``).
- the checkpoint of a MAP item that completed while others are unfinished: the run's lock,
  then one statement that adds the item's tokens, writes it (fenced) and sends the next
  items while fewer than ``concurrency`` are in flight (``checkpoint_item``).

Whenever a condition does not hold (no row claimed, run cancelled or past its deadline,
attempt fenced off, capped workflow, resumed retry) or the step did anything but complete
and go on (failure, retry, skips), these functions answer ``None`` (or ``False``), and the
transition goes on with its general code, which decides and records why. Off with
``PROMPTPILOT_FAST_STATEMENTS=false``, and on other databases (SQLite).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.db import transaction

from promptpilot.common.db import prepared_cursor
from providers.types import TokenUsage

from ...engine import runner
from ...engine.retry import normalize_retry_config
from ...engine.types import COMPLETED, RunContext, StepDefinition, StepResult, WorkflowDefinition
from ...models import (
    ExecutionStatus,
    StepExecutionStatus,
    Workflow,
    WorkflowExecution,
    WorkflowStep,
    WorkflowStepExecution,
    WorkflowVersion,
)
from .types import Checkpointed, Claimed

RUNS = WorkflowExecution._meta.db_table
STEPS = WorkflowStepExecution._meta.db_table


CLAIM_SQL = f"""
WITH claimed AS (
    UPDATE {STEPS} s
       SET status = %(running)s, lease_expires_at = %(lease)s, worker = %(worker)s,
           started_at = COALESCE(s.started_at, %(now)s)
      FROM {RUNS} e
     WHERE s.id = %(id)s AND s.attempt = %(attempt)s AND s.status = %(pending)s
       AND e.id = s.execution_id AND e.status = %(run_running)s
       AND (e.deadline_at IS NULL OR e.deadline_at > %(now)s)
    RETURNING s.step_name, s.execution_id, s.tokens, e.workflow_id, e.version_id, e.input, e.metadata,
              e.trigger_type, s.item_index, CASE WHEN s.item_index IS NULL THEN NULL ELSE s.input -> 'item' END AS item
)
SELECT c.step_name, c.execution_id, c.tokens, c.workflow_id, c.version_id, c.input, c.metadata, c.trigger_type,
       (SELECT COALESCE(json_agg(json_build_array(p.step_name, p.output, p.outputs, p.status)
                                 ORDER BY p.step_order), '[]'::json)
          FROM {STEPS} p
         WHERE p.execution_id = c.execution_id AND p.status IN (%(completed)s, %(failed)s)
           AND p.item_index IS NULL),
       c.item_index, c.item
  FROM claimed c
"""  # NOTE: p.item_index IS NULL: a MAP step's item rows are not steps of the context


def _loads(value: Any) -> Any:
    # Django has psycopg return jsonb as text (JSONField decodes it); json comes decoded.
    return json.loads(value) if isinstance(value, str | bytes) else value


LARGE_INPUT_CHARS = 64 * 1024


@lru_cache(maxsize=16)
def _decoded_large(text: str) -> Any:
    return json.loads(text)


def _run_input(value: Any) -> Any:
    """A run's input as a claim reads it. A MAP run's input often holds every item, and each
    item's claim reads it again: a large one is decoded once per process (a run's input
    never changes once it started, and templates only read it)."""
    if isinstance(value, str) and len(value) > LARGE_INPUT_CHARS:
        return _decoded_large(value)
    return _loads(value)


def claim(step_execution_id: uuid.UUID | str, attempt: int, *, worker: str, lease_seconds: float,
          now: datetime) -> Claimed | None:
    with prepared_cursor() as cursor:
        cursor.execute(CLAIM_SQL, {
            "id": str(step_execution_id), "attempt": attempt, "now": now, "worker": worker,
            "lease": now + timedelta(seconds=lease_seconds),
            "running": StepExecutionStatus.RUNNING, "pending": StepExecutionStatus.PENDING,
            "run_running": ExecutionStatus.RUNNING,
            # Skipped steps stay out of the context, as in previews: templates can test `is defined`.
            "completed": StepExecutionStatus.COMPLETED, "failed": StepExecutionStatus.FAILED,
        })
        row = cursor.fetchone()
    if row is None:
        return None
    step_name, execution_id, tokens, workflow_id, version_id, inputs, metadata, trigger_type, done, item_index, item = row
    metadata = _loads(metadata) or {}
    steps = {name: {"output": output, "outputs": outputs, "status": status}
             for name, output, outputs, status in _loads(done)}
    return Claimed(
        step_execution_id=str(step_execution_id), attempt=attempt, step_name=step_name,
        execution_id=execution_id, workflow_id=workflow_id, version_id=version_id,
        step_tokens=_loads(tokens) or {},
        context=RunContext(inputs=_run_input(inputs) or {}, steps=steps,
                           trigger={"type": trigger_type, "payload": metadata.get("payload")}),
        item_index=item_index, item=_loads(item) if item_index is not None else None,
    )


RUN_LOCK_SQL = f"""
SELECT aggregate_tokens, warnings FROM {RUNS}
 WHERE id = %(execution_id)s AND status = %(run_running)s AND (deadline_at IS NULL OR deadline_at > %(now)s)
   FOR UPDATE
"""

RUN_UPDATE_SQL = f"UPDATE {RUNS} SET aggregate_tokens = %(aggregate)s::jsonb, warnings = %(warnings)s::jsonb"
RUN_FINISH_SQL = ", status = %(completed)s, completed_at = %(now)s, output = %(output)s::jsonb, error = NULL"

STEP_UPDATE_SQL = f"""
UPDATE {STEPS}
   SET status = %(completed)s, completed_at = %(now)s, lease_expires_at = NULL,
       input = %(input)s::jsonb, output = %(output)s::jsonb, outputs = %(outputs)s::jsonb,
       error = %(error)s::jsonb, model_outputs = %(model_outputs)s::jsonb, tokens = %(tokens)s::jsonb,
       warnings = warnings || %(new_warnings)s::jsonb
 WHERE id = %(id)s AND attempt = %(attempt)s AND status = %(running)s
"""


class _NotCommonPath(Exception):
    """Roll the transaction back; the ORM path decides what happened."""


INSERT_STEP_SQL = f"""
INSERT INTO {STEPS} (
    id, execution_id, step_id, step_name, step_order, step_type, status, retry_count, retry_config,
    model_outputs, tokens, warnings, attempt, lost_attempts, available_at, worker, created_at,
    lease_expires_at, started_at)
SELECT %(next_id)s::uuid, %(execution_id)s::uuid,
       (SELECT id FROM {WorkflowStep._meta.db_table} WHERE id = %(next_snapshot_id)s AND workflow_id = %(workflow_id)s),
       %(next_name)s::text, %(next_order)s::integer, %(next_type)s::text, %(next_status)s::text, 0,
       %(next_retry_config)s::jsonb, '[]'::jsonb, '{{}}'::jsonb, '[]'::jsonb, 1, 0, %(now)s::timestamptz,
       %(next_worker)s::text, %(now)s::timestamptz, %(next_lease)s::timestamptz, %(next_started_at)s::timestamptz
"""  # NOTE: the casts: bound on the server, a SELECT list's parameters have no type of their own


def _checkpoint_sql(*, last: bool) -> str:
    """One statement for the run, the step and the next step (all or nothing: the caller
    rolls back when the step was fenced off, which the count of ``step`` tells). It also
    answers the workflow's ``max_concurrent_executions``: a run that ends frees a slot."""
    run = f"{RUN_UPDATE_SQL}{RUN_FINISH_SQL if last else ''} WHERE id = %(execution_id)s"
    following = "" if last else f", following AS ({INSERT_STEP_SQL} WHERE EXISTS (SELECT 1 FROM step))"
    cap = f"(SELECT w.max_concurrent_executions FROM {Workflow._meta.db_table} w WHERE w.id = {RUNS}.workflow_id)"
    return (f"WITH run AS ({run} RETURNING {cap} AS cap), step AS ({STEP_UPDATE_SQL} RETURNING 1){following} "
            "SELECT (SELECT count(*) FROM step), (SELECT cap FROM run)")


def checkpoint(claimed: Claimed, step: StepDefinition, definition: WorkflowDefinition, result: StepResult,
               *, raw_definition: dict[str, Any], now: datetime, worker: str, lease_seconds: float,
               claim_next: bool, add_tokens) -> Checkpointed | None:
    """Checkpoint a COMPLETED step that goes on to its next step or ends the run.

    The next step is inserted PENDING and sent after commit (``enqueue_step``), or, with
    ``claim_next``, inserted already RUNNING under this worker's lease and returned as
    ``next_claimed`` for this task to run next: the same state a claim would have written,
    without the claim's statement and commit. ``add_tokens(run, result)`` is the ORM
    path's own arithmetic, so both paths count tokens and cost alike."""
    if result.status != COMPLETED or result.child is not None:  # a WORKFLOW step starts a child: ORM path
        return None
    if claimed.item_index is not None:  # a MAP item: ``checkpoint_item``
        return None
    transition = runner.next_transition(definition, step, result)
    if transition.fail_run or transition.skipped:
        return None
    last = transition.next_step is None

    def write(cursor, values: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if not last:
            values.update(_next_step_values(transition.next_step, workflow_id=claimed.workflow_id,
                                            raw_definition=raw_definition, now=now, worker=worker,
                                            lease_seconds=lease_seconds, claim_next=claim_next))
        cursor.execute(_checkpoint_sql(last=last), values)
        steps_written, cap = cursor.fetchone()
        if steps_written != 1:  # fenced off: a newer attempt owns the step
            raise _NotCommonPath
        return values, cap

    written = _under_run_lock(claimed, result, now=now, add_tokens=add_tokens, write=write)
    if written is None:
        return None
    values, cap = written
    if last:
        return Checkpointed(outcome="checkpointed", finished=True, capped=bool(cap))
    context = claimed.context
    return Checkpointed(outcome="checkpointed", next_claimed=_handed_on(
        values, claim_next, transition.next_step, claimed.execution_id, claimed.workflow_id, claimed.version_id,
        # what a claim would read back: the finished steps' outputs, this one's included
        RunContext(inputs=context.inputs, steps={**context.steps, step.name: runner.context_entry(step, result)},
                   trigger=context.trigger),
    ))


def _under_run_lock(claimed: Claimed, result: StepResult, *, now: datetime, add_tokens, write):
    """The rule every checkpoint here shares: in one transaction, lock the run (as cancel
    does) while it is RUNNING and before its deadline, add the step's tokens to its totals
    with ``add_tokens(run, result)`` (the ORM path's own arithmetic), then answer what
    ``write(cursor, values)`` answers (never ``None``) once committed. ``values`` holds the
    run's new totals and the step's COMPLETED row (``STEP_UPDATE_SQL``); ``write`` raises
    ``_NotCommonPath`` to roll back. ``None``: rolled back, the ORM path decides."""
    params = {"execution_id": claimed.execution_id, "now": now, "run_running": ExecutionStatus.RUNNING,
              "completed": StepExecutionStatus.COMPLETED, "running": StepExecutionStatus.RUNNING}
    try:
        with transaction.atomic(), prepared_cursor() as cursor:
            cursor.execute(RUN_LOCK_SQL, params)
            row = cursor.fetchone()
            if row is None:  # cancelled, failed, or past its deadline
                raise _NotCommonPath
            run = _RunTotals(aggregate_tokens=_loads(row[0]) or {}, warnings=_loads(row[1]) or [])
            add_tokens(run, result)
            return write(cursor, {
                **params, "aggregate": json.dumps(run.aggregate_tokens), "warnings": json.dumps(run.warnings),
                "id": claimed.step_execution_id, "attempt": claimed.attempt,
                "input": json.dumps(result.input), "output": json.dumps(result.output),
                "outputs": json.dumps(result.outputs), "error": json.dumps(result.error),
                "model_outputs": json.dumps(result.model_outputs),
                "tokens": json.dumps((TokenUsage.from_raw(claimed.step_tokens) + TokenUsage.from_raw(result.tokens)).as_dict()),
                "new_warnings": json.dumps(list(result.warnings or [])),
            })
    except _NotCommonPath:
        return None


ITEM_SQL = f"""
WITH run AS ({RUN_UPDATE_SQL} WHERE id = %(execution_id)s RETURNING 1),
step AS ({STEP_UPDATE_SQL} RETURNING 1),
items AS (
    SELECT count(*) FILTER (WHERE status = %(running)s OR (status = %(pending)s AND available_at IS NOT NULL))
               AS in_flight,
           count(*) FILTER (WHERE status IN (%(pending)s, %(running)s)) AS unfinished
      FROM {STEPS}
     WHERE execution_id = %(execution_id)s AND step_order = %(step_order)s AND item_index IS NOT NULL
),
sent AS (
    UPDATE {STEPS} SET available_at = %(now)s
     WHERE id IN (SELECT id FROM {STEPS}
                   WHERE execution_id = %(execution_id)s AND step_order = %(step_order)s
                     AND item_index IS NOT NULL AND status = %(pending)s AND available_at IS NULL
                   ORDER BY item_index
                   LIMIT GREATEST(%(concurrency)s - ((SELECT in_flight FROM items) - 1), 0))
       AND EXISTS (SELECT 1 FROM step)
    RETURNING id
)
SELECT (SELECT count(*) FROM step), (SELECT unfinished FROM items) - 1, ARRAY(SELECT id FROM sent)
"""  # NOTE: every part sees the rows as they were before it: this item still RUNNING, hence the "- 1"s


def checkpoint_item(claimed: Claimed, result: StepResult, *, concurrency: int, step_order: int, now: datetime,
                    add_tokens) -> Checkpointed | None:
    """Checkpoint a MAP item that COMPLETED while other items of its step are unfinished:
    under the run's lock (as every checkpoint), one statement adds its tokens to the run,
    writes the item (fenced), and sends the next items not yet sent while fewer than
    ``concurrency`` are in flight. The last item (the join), a failure, a fenced-off
    attempt or a run no longer RUNNING: ``None``, and the ORM path decides."""
    if result.status != COMPLETED:
        return None

    def write(cursor, values: dict[str, Any]) -> list:
        cursor.execute(ITEM_SQL, {**values, "pending": StepExecutionStatus.PENDING, "step_order": step_order,
                                  "concurrency": concurrency})
        steps_written, unfinished, sent = cursor.fetchone()
        if steps_written != 1 or unfinished <= 0:  # fenced off, or the last item: the join is the ORM path's
            raise _NotCommonPath
        return sent

    sent = _under_run_lock(claimed, result, now=now, add_tokens=add_tokens, write=write)
    if sent is None:
        return None
    from ..dispatch import enqueue_step

    for step_execution_id in sent:  # committed: sent now (never-sent items are at attempt 1)
        enqueue_step(step_execution_id, 1)
    return Checkpointed(outcome="checkpointed")


def _next_step_values(step: StepDefinition, *, workflow_id: int, raw_definition: dict[str, Any], now: datetime,
                      worker: str, lease_seconds: float, claim_next: bool) -> dict[str, Any]:
    """The next step's row: PENDING, or (``claim_next``) RUNNING under this worker's lease."""
    snapshot_id = next((s.get("id") for s in raw_definition["steps"] if s["name"] == step.name), None)
    return {
        "next_id": uuid.uuid4(), "workflow_id": workflow_id, "now": now, "next_snapshot_id": snapshot_id,
        "next_name": step.name, "next_order": step.order, "next_type": step.type,
        "next_retry_config": json.dumps(normalize_retry_config(step.retry_config)),
        "next_status": StepExecutionStatus.RUNNING if claim_next else StepExecutionStatus.PENDING,
        "next_worker": worker if claim_next else "",
        "next_lease": now + timedelta(seconds=lease_seconds) if claim_next else None,
        "next_started_at": now if claim_next else None,
    }


def _handed_on(values: dict[str, Any], claim_next: bool, step: StepDefinition, execution_id, workflow_id: int,
               version_id: int, context: RunContext) -> Claimed | None:
    """After commit: the claimed next step for this task, or the PENDING one sent to the
    broker (``enqueue_step`` sends on commit; we are past it, so it sends now)."""
    from ..dispatch import enqueue_step

    if not claim_next:
        enqueue_step(values["next_id"], 1)
        return None
    return Claimed(step_execution_id=str(values["next_id"]), attempt=1, step_name=step.name,
                   execution_id=execution_id, workflow_id=workflow_id, version_id=version_id, step_tokens={},
                   context=context)


ADMIT_SQL = f"""
UPDATE {RUNS} e
   SET status = %(run_running)s, started_at = COALESCE(e.started_at, %(now)s),
       deadline_at = COALESCE(e.started_at, %(now)s)
                     + make_interval(secs => NULLIF((v.definition -> 'workflow' ->> 'timeout_seconds')::float8, 0))
  FROM {Workflow._meta.db_table} w, {WorkflowVersion._meta.db_table} v
 WHERE e.id = %(execution_id)s AND e.status = %(pending)s
   AND w.id = e.workflow_id AND COALESCE(w.max_concurrent_executions, 0) = 0
   AND v.id = e.version_id
   AND jsonb_typeof(e.metadata -> 'resume_from') IS DISTINCT FROM 'string'
RETURNING e.workflow_id, e.version_id, e.input, e.metadata, e.trigger_type
"""


def admit(execution_id: uuid.UUID | str, *, now: datetime, worker: str, lease_seconds: float, claim_next: bool,
          definition_of) -> tuple[bool, Claimed | None]:
    """Start a PENDING run of an uncapped workflow from its first step: one UPDATE (status,
    start, deadline from the pinned version's timeout) and the first step's INSERT.

    Answers ``(False, None)`` when the run is not PENDING, its workflow is capped (arrival
    order needs the workflow lock), it resumes a retry, or it has no step: the ORM path
    handles those. ``definition_of(version_id)`` returns ``(raw, WorkflowDefinition)``."""
    try:
        with transaction.atomic(), prepared_cursor() as cursor:
            cursor.execute(ADMIT_SQL, {"execution_id": str(execution_id), "now": now,
                                       "run_running": ExecutionStatus.RUNNING, "pending": ExecutionStatus.PENDING})
            row = cursor.fetchone()
            if row is None:
                raise _NotCommonPath
            workflow_id, version_id, inputs, metadata, trigger_type = row
            raw, definition = definition_of(version_id)
            first = runner.first_step(definition)
            if first is None:
                raise _NotCommonPath
            values = _next_step_values(first, workflow_id=workflow_id, raw_definition=raw, now=now, worker=worker,
                                       lease_seconds=lease_seconds, claim_next=claim_next)
            cursor.execute(INSERT_STEP_SQL, {**values, "execution_id": execution_id})
        metadata = _loads(metadata) or {}
        context = RunContext(inputs=_loads(inputs) or {}, steps={},
                             trigger={"type": trigger_type, "payload": metadata.get("payload")})
        return True, _handed_on(values, claim_next, first, execution_id, workflow_id, version_id, context)
    except _NotCommonPath:
        return False, None


@dataclass
class _RunTotals:
    aggregate_tokens: dict
    warnings: list
