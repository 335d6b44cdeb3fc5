"""Celery boundaries. Tasks take ids, call one service, return. Logic lives in services/."""
from __future__ import annotations

import logging

from celery import shared_task

from .services.orchestration import execution_admit, executions_admit, step_attempt_run
from .services.reaper import reaper_sweep

logger = logging.getLogger(__name__)

DURABLE = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name="workflows.advance_execution", **DURABLE)
def advance_execution(execution_id: str) -> None:
    execution_admit(execution_id=execution_id, run_next=run_step_here)


@shared_task(name="workflows.advance_executions", **DURABLE)
def advance_executions(execution_ids: list[str]) -> None:
    """A batch of new runs from one process's start relay (services/relay.py)."""
    executions_admit(execution_ids=[str(i) for i in execution_ids], run_next=run_step_here)


@shared_task(name="workflows.run_step", **DURABLE)
def run_step(step_execution_id: str, attempt: int) -> str:
    return step_attempt_run(step_execution_id=step_execution_id, attempt=int(attempt), run_next=run_step_here)


def run_step_here(step_execution_id: str, attempt: int) -> None:
    """The next step attempt as a ``workflows.run_step`` task of its own, applied in this
    worker at once instead of going through the broker (the inline budget: see
    docs/WORKFLOW_ENGINE.md, "Going on in the same worker")."""
    result = run_step.apply(args=[step_execution_id, attempt])
    if result.failed():  # its row's lease lapses (or it stays PENDING) and the reaper re-sends it
        logger.error("step.applied_task_failed", extra={"step_execution_id": step_execution_id, "attempt": attempt,
                                                        "error": repr(result.result)})


@shared_task(name="workflows.reap", ignore_result=True, expires=60)
def reap() -> dict:
    return vars(reaper_sweep())
