"""What-if prototypes: the optimisations suggested in bench/README.md, as monkeypatches.

NOT PromptPilot as shipped. ``python bench/engine.py --what-if [LIST]`` loads this module
into its own worker (``-I bench.whatif`` with ``BENCH_WHATIF=LIST`` in the environment)
and into its own client process, to measure how far each suggested change would go
before anyone changes the project. Nothing outside the benchmark's processes is touched.

LIST is a comma separated subset of (default: all):

  conn     keep each worker process's PostgreSQL connection between tasks (Celery's
           Django fixup closes it before and after every task, so every task connects
           anew); connections are still closed when unusable or older than CONN_MAX_AGE.
  claim    claim a step attempt and read the run context in ONE statement (an UPDATE ...
           RETURNING with the fencing conditions, in a CTE that also aggregates the
           outputs of the finished steps), definitions cached by (immutable) version id.
  ckpt     checkpoint the common case (COMPLETED, a next step or the end) in one
           transaction of 3-4 raw statements: lock the run (SELECT ... FOR UPDATE, as cancel
           does; tokens and cost added with the shipped code's own arithmetic), UPDATE it
           (finishing it on the last step), fenced conditional UPDATE of the step, INSERT
           of the next step. Anything else (failure, retry, skip, fencing loss, cancel,
           deadline) falls back to the shipped code.
  admit    start uncapped runs inside execution_start's transaction (no
           advance_execution task and broker hop per run).
  version  pin the latest version with one query instead of re-snapshotting the
           workflow (4 queries and a row lock) on every start; the real change needs a
           "definition changed" marker on Workflow.
  inline   (with ckpt; not in "all") the checkpoint of step k also claims step k+1: its
           row is inserted RUNNING with this worker's lease, and the same task runs it
           next, with no broker hop, while the task has run for less than
           INLINE_BUDGET_SECONDS; past that, k+1 is inserted PENDING and sent as today.
           A worker lost mid-way leaves a RUNNING row whose lease expires: the reaper
           re-queues it, as for any lost attempt.

The rare paths keep the shipped semantics because they ARE the shipped code. Only the
common path is re-written, with the same fencing conditions as the shipped code.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

ALL = ("conn", "claim", "ckpt", "admit", "version")
OPTIONAL = ("inline",)
INLINE_BUDGET_SECONDS = 2.0


def enabled() -> set[str]:
    raw = os.environ.get("BENCH_WHATIF", "")
    chosen = {item.strip() for item in raw.split(",") if item.strip()}
    if "all" in chosen:
        chosen = set(ALL) | (chosen & set(OPTIONAL))
    unknown = chosen - set(ALL) - set(OPTIONAL)
    if unknown:
        raise SystemExit(f"BENCH_WHATIF: unknown {sorted(unknown)}; choose from {', '.join(ALL + OPTIONAL)}")
    return chosen


class _Fallback(Exception):
    """Roll back the fast path's transaction and let the shipped code handle the case."""


def _json(value: Any) -> str:
    return json.dumps(value)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


# --------------------------------------------------------------------------- conn


def patch_connections() -> None:
    from celery.fixups import django as fixup

    def _close_database(self, *args, **kwargs) -> None:
        for conn in self._db.connections.all(initialized_only=True):
            try:
                conn.close_if_unusable_or_obsolete()  # honours CONN_MAX_AGE and broken connections
            except self.interface_errors:
                pass

    fixup.DjangoWorkerFixup._close_database = _close_database


# --------------------------------------------------------------------------- claim + ckpt

_DEFINITIONS: dict[int, Any] = {}

CLAIM_SQL = """
WITH claimed AS (
    UPDATE workflow_step_executions s
    SET status = 'RUNNING', lease_expires_at = %(lease)s, worker = %(worker)s,
        started_at = COALESCE(s.started_at, %(now)s)
    FROM workflow_executions e
    WHERE s.id = %(id)s AND s.attempt = %(attempt)s AND s.status = 'PENDING'
      AND e.id = s.execution_id AND e.status = 'RUNNING'
      AND (e.deadline_at IS NULL OR e.deadline_at > %(now)s)
    RETURNING s.step_name, s.execution_id, s.tokens, e.version_id, e.workflow_id, e.input, e.metadata,
              e.trigger_type
)
SELECT c.step_name, c.execution_id, c.tokens, c.version_id, c.workflow_id, c.input, c.metadata, c.trigger_type,
       (SELECT COALESCE(json_agg(json_build_array(p.step_name, p.output, p.outputs, p.status) ORDER BY p.step_order),
                        '[]'::json)
          FROM workflow_step_executions p
         WHERE p.execution_id = c.execution_id AND p.status IN ('COMPLETED', 'FAILED'))
FROM claimed c
"""

RUN_LOCK_SQL = """
SELECT aggregate_tokens, warnings FROM workflow_executions
WHERE id = %(execution_id)s AND status = 'RUNNING' AND (deadline_at IS NULL OR deadline_at > %(now)s)
FOR UPDATE
"""

RUN_UPDATE_SQL = """
UPDATE workflow_executions SET aggregate_tokens = %(aggregate)s::jsonb, warnings = %(warnings)s::jsonb {finish}
WHERE id = %(execution_id)s
"""

FINISH_SQL = ", status = 'COMPLETED', completed_at = %(now)s, output = %(output)s::jsonb, error = NULL"

STEP_UPDATE_SQL = """
UPDATE workflow_step_executions SET
    status = 'COMPLETED', completed_at = %(now)s, lease_expires_at = NULL,
    input = %(input)s::jsonb, output = %(output)s::jsonb, outputs = %(outputs)s::jsonb, error = NULL,
    model_outputs = %(model_outputs)s::jsonb, tokens = %(tokens)s::jsonb, warnings = warnings || %(warnings)s::jsonb
WHERE id = %(id)s AND attempt = %(attempt)s AND status = 'RUNNING'
"""

INSERT_STEP_SQL = """
INSERT INTO workflow_step_executions (
    id, execution_id, step_id, step_name, step_order, step_type, status, retry_count, retry_config,
    model_outputs, tokens, warnings, attempt, lost_attempts, available_at, worker, created_at,
    lease_expires_at, started_at)
VALUES (%(id)s, %(execution_id)s,
        (SELECT id FROM workflows_workflowstep WHERE id = %(snapshot_id)s AND workflow_id = %(workflow_id)s),
        %(name)s, %(order)s, %(type)s, %(status)s, 0, %(retry_config)s::jsonb,
        '[]'::jsonb, '{}'::jsonb, '[]'::jsonb, 1, 0, %(now)s, %(worker)s, %(now)s,
        %(lease)s, %(started_at)s)
"""


def _definition(version_id: int):
    from django.db import connection

    from workflows.engine.types import WorkflowDefinition

    cached = _DEFINITIONS.get(version_id)
    if cached is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT definition FROM workflows_workflowversion WHERE id = %s", [version_id])
            raw = _loads(cursor.fetchone()[0])
        cached = _DEFINITIONS[version_id] = (WorkflowDefinition.from_dict(raw), raw)
    return cached


def patch_orchestration(use_claim: bool, use_ckpt: bool, use_inline: bool = False) -> None:
    from django.conf import settings
    from django.db import close_old_connections, connection, transaction
    from django.utils import timezone

    from providers.registry import get_adapter
    from workflows import tasks
    from workflows.engine import runner
    from workflows.engine.retry import normalize_retry_config
    from workflows.engine.types import COMPLETED, RunContext
    from workflows.services import orchestration as orch
    from workflows.services.dispatch import enqueue_step
    from workflows.signals import execution_finished

    shipped_run = orch.step_attempt_run
    shipped_checkpoint = orch._checkpoint
    conf = settings.PROMPTPILOT
    # Mirror what the shipped step_attempt_run passes today, whatever this tree's version has.
    resolver = getattr(orch, "limited_adapter", None) or get_adapter
    live_features = getattr(orch, "live_features", None)
    pricing = getattr(orch, "pricing", None)

    def limits():
        values = {"max_output_chars": conf["TEMPLATE_MAX_OUTPUT_CHARS"],
                  "max_loop_iterations": conf["TEMPLATE_MAX_LOOP_ITERATIONS"]}
        if live_features is not None:
            values["features"] = live_features()
        return values

    def fast_claim(step_execution_id, attempt):
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(CLAIM_SQL, {
                "id": str(step_execution_id), "attempt": attempt, "now": now, "worker": orch.WORKER_ID,
                "lease": now + timedelta(seconds=conf["STEP_LEASE_SECONDS"]),
            })
            row = cursor.fetchone()
        return row

    def fast_checkpoint(step_execution_id, attempt, step, definition, result, claim, inline=False):
        """Returns (outcome, next) where next = (step_execution_id, step) when this task goes on
        with the next step, already claimed (inline), else None."""
        now = timezone.now()
        transition = runner.next_transition(definition, step, result)
        if result.status != COMPLETED or transition.fail_run or transition.skipped:
            return shipped_checkpoint(step_execution_id, attempt, step, definition, result), None
        following = None
        _, execution_id, step_tokens, version_id, workflow_id = claim[:5]
        step_tokens = _loads(step_tokens) or {}
        last = transition.next_step is None
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                # the run: lock it (cancel locks it too) and add this step's tokens and cost with
                # the shipped code's own arithmetic; on the last step, finish it in the same UPDATE
                cursor.execute(RUN_LOCK_SQL, {"execution_id": execution_id, "now": now})
                row = cursor.fetchone()
                if row is None:  # cancelled, finished, or past its deadline
                    raise _Fallback
                run = SimpleNamespace(aggregate_tokens=_loads(row[0]) or {}, warnings=_loads(row[1]) or [])
                orch._add_tokens(run, result)
                cursor.execute(RUN_UPDATE_SQL.format(finish=FINISH_SQL if last else ""), {
                    "aggregate": _json(run.aggregate_tokens), "warnings": _json(run.warnings),
                    "execution_id": execution_id, "now": now, "output": _json(result.output),
                })
                cursor.execute(STEP_UPDATE_SQL, {
                    "now": now, "input": _json(result.input), "output": _json(result.output),
                    "outputs": _json(result.outputs), "model_outputs": _json(result.model_outputs),
                    "tokens": _json(orch._sum_tokens(step_tokens, result.tokens)),
                    "warnings": _json(result.warnings or []), "id": str(step_execution_id), "attempt": attempt,
                })
                if cursor.rowcount != 1:  # fenced off: a newer attempt owns the step
                    raise _Fallback
                if not last:
                    nxt = transition.next_step
                    raw = _definition(version_id)[1]
                    snapshot_id = next((s.get("id") for s in raw["steps"] if s["name"] == nxt.name), None)
                    new_id = uuid.uuid4()
                    lease = now + timedelta(seconds=conf["STEP_LEASE_SECONDS"])
                    cursor.execute(INSERT_STEP_SQL, {
                        "id": new_id, "execution_id": execution_id, "snapshot_id": snapshot_id,
                        "workflow_id": workflow_id, "name": nxt.name, "order": nxt.order, "type": nxt.type,
                        "retry_config": _json(normalize_retry_config(nxt.retry_config)), "now": now,
                        "status": "RUNNING" if inline else "PENDING", "worker": orch.WORKER_ID if inline else "",
                        "lease": lease if inline else None, "started_at": now if inline else None,
                    })
                    if inline:
                        following = (new_id, nxt)
                    else:
                        enqueue_step(new_id, 1)
                elif execution_finished.receivers:
                    transaction.on_commit(lambda: orch._announce_finished(execution_id))
        except _Fallback:
            return shipped_checkpoint(step_execution_id, attempt, step, definition, result), None
        return "checkpointed", following

    def step_attempt_run(*, step_execution_id, attempt: int) -> str:
        if use_claim:
            claim = fast_claim(step_execution_id, attempt)
            if claim is None:  # missing, duplicate, stale or past the deadline: the shipped code decides
                return shipped_run(step_execution_id=step_execution_id, attempt=attempt)
            step_name, execution_id, _, version_id, _, inputs, metadata, trigger_type, done = claim
            definition = _definition(version_id)[0]
            steps = {name: {"output": output, "outputs": outputs, "status": status}
                     for name, output, outputs, status in _loads(done)}
            metadata = _loads(metadata) or {}
            context = RunContext(inputs=_loads(inputs) or {}, steps=steps,
                                 trigger={"type": trigger_type, "payload": metadata.get("payload")})
        else:
            claimed = orch._claim(step_execution_id, attempt)
            if claimed is None:
                return "not-claimed"
            step_execution, execution, definition = claimed
            context = orch._run_context(execution)
            claim = (step_execution.step_name, execution.id, step_execution.tokens,
                     execution.version_id, execution.workflow_id)
        step = definition.step(claim[0])
        began = time.monotonic()
        while True:
            with orch._Heartbeat(step_execution_id, attempt):
                result = runner.run_step(step, context, providers=resolver, limits=limits())
            if pricing is not None:
                pricing.annotate_costs(result.model_outputs)
            close_old_connections()
            if not use_ckpt:
                return shipped_checkpoint(step_execution_id, attempt, step, definition, result)
            inline = use_inline and time.monotonic() - began < INLINE_BUDGET_SECONDS
            outcome, following = fast_checkpoint(step_execution_id, attempt, step, definition, result, claim,
                                                 inline=inline)
            if following is None:
                return outcome
            # this task already holds the next step's lease: run it with the context it just extended
            steps = {**context.steps, step.name: runner.context_entry(step, result)}
            context = RunContext(inputs=context.inputs, steps=steps, trigger=context.trigger)
            step_execution_id, step = following
            attempt = 1
            claim = (step.name, claim[1], "{}", claim[3], claim[4])

    tasks.step_attempt_run = step_attempt_run
    orch.step_attempt_run = step_attempt_run


# --------------------------------------------------------------------------- client side


def patch_admission() -> None:
    """execution_start begins uncapped runs in its own transaction: no advance_execution hop."""
    from workflows.services import executions, orchestration

    shipped_enqueue = executions.enqueue_execution

    def enqueue_execution(execution_id) -> None:
        from workflows.models import WorkflowExecution

        execution = WorkflowExecution.objects.select_related("workflow", "version").get(pk=execution_id)
        if execution.workflow.max_concurrent_executions or (execution.metadata or {}).get("resume_from"):
            shipped_enqueue(execution_id)
            return
        orchestration._begin(execution)  # inside execution_start's transaction; sends run_step on commit

    executions.enqueue_execution = enqueue_execution


def patch_version_pinning() -> None:
    from workflows.services import executions

    def workflow_current_version(*, workflow):
        return workflow.versions.order_by("-number").first()

    executions.workflow_current_version = workflow_current_version


def apply_worker() -> None:
    chosen = enabled()
    if "conn" in chosen:
        patch_connections()
    if "inline" in chosen and "ckpt" not in chosen:
        raise SystemExit("BENCH_WHATIF: inline needs ckpt")
    if chosen & {"claim", "ckpt"}:
        patch_orchestration("claim" in chosen, "ckpt" in chosen, "inline" in chosen)


def apply_client() -> None:
    chosen = enabled()
    if "admit" in chosen:
        patch_admission()
    if "version" in chosen:
        patch_version_pinning()


if os.environ.get("BENCH_WHATIF_WORKER") == "1":
    apply_worker()
