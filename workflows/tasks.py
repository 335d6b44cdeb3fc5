"""Celery boundaries. Tasks take ids, call one service, return. Logic lives in services/."""
from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from promptpilot.common import task_names

from .services.orchestration import execution_admit, executions_admit, step_attempt_run, wait_timer_fire
from .services.reaper import reaper_sweep

logger = logging.getLogger(__name__)

DURABLE = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}
# Time limits: a step task runs one attempt (plus the next ones while the inline budget
# lasts); its model call is bounded by the step's own timeout, its lease by the reaper.
# These are the last resort, kept under half the broker's visibility timeout (the same
# bound checks.py holds leases and backoffs to). Celery enforces them in a prefork pool
# only; in the default thread pool the step timeout and the lease are what bound a task.
STEP_TIME_LIMIT = settings.PROMPTPILOT["VISIBILITY_TIMEOUT"] / 2
STEP_LIMITS = {"soft_time_limit": STEP_TIME_LIMIT * 0.9, "time_limit": STEP_TIME_LIMIT}


@shared_task(name=task_names.ADVANCE_EXECUTION, **DURABLE, **STEP_LIMITS)
def advance_execution(execution_id: str) -> None:
    execution_admit(execution_id=execution_id, run_next=run_step_here)


@shared_task(name=task_names.ADVANCE_EXECUTIONS, **DURABLE, **STEP_LIMITS)
def advance_executions(execution_ids: list[str]) -> None:
    """A batch of new runs from one process's start relay (services/relay.py)."""
    executions_admit(execution_ids=[str(i) for i in execution_ids], run_next=run_step_here)


@shared_task(name=task_names.RUN_STEP, **DURABLE, **STEP_LIMITS)
def run_step(step_execution_id: str, attempt: int) -> str:
    return step_attempt_run(step_execution_id=step_execution_id, attempt=int(attempt), run_next=run_step_here)


@shared_task(name=task_names.RESUME_WAIT, **DURABLE, soft_time_limit=60, time_limit=90)
def resume_wait(step_execution_id: str) -> str:
    """A WAITING step's time came (a DELAY is due, an APPROVAL timed out)."""
    return wait_timer_fire(step_execution_id=step_execution_id)


def run_step_here(step_execution_id: str, attempt: int) -> None:
    """The next step attempt as a ``workflows.run_step`` task of its own, applied in this
    worker at once instead of going through the broker (the inline budget: see
    docs/WORKFLOW_ENGINE.md, "Going on in the same worker")."""
    result = run_step.apply(args=[step_execution_id, attempt])
    if result.failed():  # its row's lease lapses (or it stays PENDING) and the reaper re-sends it
        logger.error("step.applied_task_failed", extra={"step_execution_id": step_execution_id, "attempt": attempt,
                                                        "error": repr(result.result)})


@shared_task(name=task_names.REAP, ignore_result=True, expires=60, soft_time_limit=120, time_limit=150)
def reap() -> dict:
    return vars(reaper_sweep())
