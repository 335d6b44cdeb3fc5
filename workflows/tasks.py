"""Celery boundaries. Tasks take ids, call one service, return. Logic lives in services/."""
from __future__ import annotations

from celery import shared_task

from .services.orchestration import execution_admit, step_attempt_run
from .services.reaper import reaper_sweep

DURABLE = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


@shared_task(name="workflows.advance_execution", **DURABLE)
def advance_execution(execution_id: str) -> None:
    execution_admit(execution_id=execution_id)


@shared_task(name="workflows.run_step", **DURABLE)
def run_step(step_execution_id: str, attempt: int) -> str:
    return step_attempt_run(step_execution_id=step_execution_id, attempt=int(attempt))


@shared_task(name="workflows.reap", ignore_result=True, expires=60)
def reap() -> dict:
    return vars(reaper_sweep())
