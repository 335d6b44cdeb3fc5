"""Durable orchestration: drive runs through their transitions, one step attempt at a time.

A run is admitted (``execution_admit``), then each step attempt is claimed, computed
outside any transaction, and checkpointed (``step_attempt_run``); while a task's inline
budget lasts it goes on with the next step itself (``_go_on``). Every status change these
make is a function of ``transitions``, which decides and writes it; this module only
decides what runs where, and holds no database connection while a step calls out.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from promptpilot.common import metrics
from promptpilot.common.db import release_connection
from promptpilot.common.logs import log_context
from providers import pricing
from providers.ratelimit import limited_adapter
from providers.types import DEFAULT_TIMEOUT_SECONDS

from ..engine import runner
from ..engine.steps.map_step import inner_step
from ..models import WorkflowExecution
from . import transitions
from .dispatch import Continuation, continuation, current_continuation
from .leases import keeper
from .limits import engine_limits
from .transitions import Claimed

logger = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()


def worker_id() -> str:
    """``host:pid`` of the process running the attempt (read each time: prefork pool
    children are forked after this module is imported)."""
    return f"{HOSTNAME}:{os.getpid()}"
CONNECTION_CHECK_AFTER_SECONDS = 1.0


def _conf(key: str) -> Any:
    return settings.PROMPTPILOT[key]


# --- admission ---------------------------------------------------------------------


def execution_admit(*, execution_id: uuid.UUID | str, run_next: RunNext | None = None,
                    go_on_here: bool = True) -> None:
    """Start a PENDING execution if its workflow has a free slot (``transitions.execution_begin``),
    then hand its first steps to ``run_next`` while the inline budget lasts (see ``_go_on``).
    ``go_on_here=False``: the first step goes to the broker, for any worker to take."""
    budget = _conf("INLINE_STEP_BUDGET_SECONDS") if go_on_here else 0
    with log_context(execution_id=execution_id), continuation(budget) as holder:
        first = transitions.execution_begin(execution_id=execution_id, worker=worker_id(),
                                            claim_first=holder is not None and holder.can_keep())
        if first is not None:
            holder.keep(first)
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


# --- one step attempt ----------------------------------------------------------------


RunNext = Callable[[str, int], object]
_handed_over = threading.local()


def step_attempt_run(*, step_execution_id: uuid.UUID | str, attempt: int, run_next: RunNext | None = None) -> str:
    """Run one attempt of one step: claim, compute (outside any transaction), checkpoint;
    then hand the steps that follow to ``run_next`` while the inline budget lasts.

    ``run_next(step_execution_id, attempt)`` runs an attempt as a task of its own in this
    process (the Celery task applies itself: workflows/tasks.py); without it, attempts run
    by a nested call of this function (tests, in-process callers). Returns what happened
    to this attempt ("checkpointed", "retry-scheduled", "deferred", "not-claimed", "rejected") for logs
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
        if isinstance(following, Claimed):
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


def _take_handed_over(step_execution_id, attempt: int) -> Claimed | None:
    claims = getattr(_handed_over, "claims", None)
    return claims.pop((str(step_execution_id), attempt), None) if claims else None


def _attempt(step_execution_id: uuid.UUID | str, attempt: int) -> str:
    claimed = transitions.step_claim(step_execution_id=step_execution_id, attempt=attempt, worker=worker_id())
    return "not-claimed" if claimed is None else _run_claimed(claimed)


def _run_claimed(claimed: Claimed) -> str:
    # Every line this attempt logs (model calls, checkpoint) carries its ids.
    with log_context(execution_id=claimed.execution_id, workflow_id=claimed.workflow_id, step=claimed.step_name,
                     attempt=claimed.attempt):
        return _run_attempt(claimed)


def _run_attempt(claimed: Claimed) -> str:
    definition = transitions.version_snapshot(claimed.version_id)[1]
    step = definition.step(claimed.step_name)
    # A MAP step's item runs the MAP's inner step (with item and index in its context).
    runs = inner_step(step) if claimed.item_index is not None else step
    # CPU-bound templates stop at the step's and the workflow's timeouts.
    deadline, budget = _render_deadline(claimed, runs, definition)
    limits = engine_limits(deadline=deadline, deadline_seconds=budget)
    # Every claim path (a delivered message, the admission, the checkpoint that handed the
    # next step on) ends here: the one place an attempt starts running.
    logger.info("step.started", extra={"step_type": runs.type, "item_index": claimed.item_index})
    began = time.monotonic()
    with keeper.holding(claimed.step_execution_id, claimed.attempt):
        if claimed.item_index is None:
            result = runner.run_step(step, claimed.context, providers=_adapter_for_call, limits=limits)
        else:
            result = runner.run_item(step, claimed.context, claimed.item, claimed.item_index,
                                     providers=_adapter_for_call, limits=limits)
    ran_for = time.monotonic() - began
    metrics.STEP_DURATION.labels(runs.type).observe(ran_for)
    pricing.annotate_costs(result.model_outputs)  # cost_usd on each model output
    metrics.model_calls_observe(result.model_outputs)
    if ran_for > CONNECTION_CHECK_AFTER_SECONDS:
        # The connection sat idle through a long step: drop it if broken or too old, as Django
        # does between requests (a check costs a round trip, so not after every short step).
        close_old_connections()
    holder = current_continuation()
    done = transitions.step_checkpoint(claimed=claimed, result=result, worker=worker_id(),
                                       claim_next=holder is not None and holder.can_keep())
    if done.next_claimed is not None:
        holder.keep(done.next_claimed)
    return done.outcome


def _render_deadline(claimed: Claimed, step, definition) -> tuple[float, float]:
    """The ``time.monotonic()`` by which this attempt's templates must be rendered, and the
    seconds it stands for: its step's ``timeout_seconds`` from now, or what is left of the
    workflow's, if sooner."""
    now = time.monotonic()
    budget = float(step.timeout_seconds or DEFAULT_TIMEOUT_SECONDS)
    if definition.timeout_seconds:
        started_at = WorkflowExecution.objects.filter(pk=claimed.execution_id).values_list(
            "started_at", flat=True).first()
        if started_at is not None:
            left = float(definition.timeout_seconds) - (timezone.now() - started_at).total_seconds()
            budget = min(budget, round(max(0.0, left), 1))
    return now + budget, budget


# --- waits --------------------------------------------------------------------------


def wait_timer_fire(*, step_execution_id: uuid.UUID | str) -> str:
    """A wait's time has come (its countdown message, or the reaper): resume it with the
    timer decision. "resumed"; "early" (the message came before the due time the database
    holds, e.g. clock skew: sent again for the rest); "not-waiting" (decided, cancelled,
    already resumed: a duplicate is a no-op)."""
    from django.utils import timezone

    from ..models import StepExecutionStatus, WorkflowStepExecution
    from .dispatch import enqueue_wait_timer

    if transitions.step_resume(step_execution_id=step_execution_id, decision={"timer": True}) is not None:
        return "resumed"
    due = (WorkflowStepExecution.objects.filter(pk=step_execution_id, status=StepExecutionStatus.WAITING)
           .values_list("available_at", flat=True).first())
    if due is None:
        return "not-waiting"
    enqueue_wait_timer(step_execution_id, countdown=max((due - timezone.now()).total_seconds(), 0.1))
    return "early"


def _adapter_for_call(name: str):
    """The adapter a step is about to call: ``registry.get_adapter`` wrapped in the
    provider's shared rate limit (reading both may query the database). The call itself
    may take seconds, so this thread's connection goes back to the pool first: a worker
    waiting on a hundred calls holds no connection for any of them."""
    adapter = limited_adapter(name)
    release_connection()
    return adapter
