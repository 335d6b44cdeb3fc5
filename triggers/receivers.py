"""Signal receivers and the Celery task of the event bus (imported by ``TriggersConfig.ready``,
so the task is registered in every process: web, worker and beat).

When a run ends COMPLETED or FAILED, ``execution_finished`` (sent after the run's commit)
queues ``triggers.dispatch_event`` with the run's id; the task emits the platform event
through ``services/events.py``. The task is idempotent, so a broker redelivery (acks_late)
or a retry starts nothing twice. If the event could not be queued (the process died after
the run's commit, or the broker was down), ``triggers.redeliver_events`` (beat) finds the
run still unmarked and dispatches it.
"""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import DatabaseError, transaction
from django.dispatch import receiver

from promptpilot.common import task_names
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished, execution_waiting

from .services.events import (
    event_dispatch_for_execution,
    event_dispatch_for_wait,
    event_redeliver_missed,
    execution_has_listeners,
    wait_has_listeners,
)

logger = logging.getLogger(__name__)

DISPATCH_EVENT_TASK = task_names.DISPATCH_EVENT
DISPATCH_WAITING_EVENT_TASK = task_names.DISPATCH_WAITING_EVENT
REDELIVER_EVENTS_TASK = task_names.REDELIVER_EVENTS


@shared_task(
    name=DISPATCH_EVENT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
    soft_time_limit=120, time_limit=150,
    autoretry_for=(DatabaseError,), retry_backoff=2, retry_backoff_max=60, max_retries=5,
)
def dispatch_event(execution_id: str) -> int:
    """Emit the platform event of a finished run; returns how many triggers matched."""
    return len(event_dispatch_for_execution(execution_id=execution_id))


@shared_task(name=REDELIVER_EVENTS_TASK, ignore_result=True, expires=60, soft_time_limit=120, time_limit=150)
def redeliver_events() -> int:
    """The sweep (beat): platform events whose queueing was lost are dispatched late."""
    return event_redeliver_missed()


def _enqueue_dispatch(execution_id: str) -> None:
    try:
        dispatch_event.apply_async(args=[execution_id])
    except Exception as exc:  # broker down: logged; the redeliver_events sweep sends it later
        logger.error("event.enqueue_failed", extra={"execution_id": execution_id, "error": str(exc)})


@receiver(execution_finished, sender=WorkflowExecution, dispatch_uid="triggers.platform_events")
def on_execution_finished(sender, execution: WorkflowExecution, **kwargs) -> None:
    """Queue the run's platform event, if any trigger of its owner listens for it."""
    if not execution_has_listeners(execution):
        return  # most runs: no EVENT trigger listens, no message is sent
    execution_id = str(execution.pk)
    # NOTE: the signal is sent after the run's commit; on_commit still guards a caller
    # that sends it inside a transaction, so the task never reads an uncommitted run.
    transaction.on_commit(lambda: _enqueue_dispatch(execution_id))


@shared_task(
    name=DISPATCH_WAITING_EVENT_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
    soft_time_limit=120, time_limit=150,
    autoretry_for=(DatabaseError,), retry_backoff=2, retry_backoff_max=60, max_retries=5,
)
def dispatch_waiting_event(step_execution_id: str) -> int:
    """Emit ``execution.waiting`` for a step that waits; returns how many triggers matched."""
    return len(event_dispatch_for_wait(step_execution_id=step_execution_id))


@receiver(execution_waiting, sender=WorkflowExecution, dispatch_uid="triggers.platform_waiting_events")
def on_execution_waiting(sender, execution: WorkflowExecution, step_execution, **kwargs) -> None:
    """Queue ``execution.waiting`` if a trigger of the run's owner listens for it. (Unlike
    the end-of-run events, a lost queueing is not swept again: the run itself still waits
    and shows on the owner's Awaiting approval list.)"""
    if not wait_has_listeners(owner_id=execution.workflow.owner_id):
        return
    step_execution_id = str(step_execution.pk)

    def enqueue() -> None:
        try:
            dispatch_waiting_event.apply_async(args=[step_execution_id])
        except Exception as exc:  # broker down: logged
            logger.error("event.enqueue_failed", extra={"step_execution_id": step_execution_id, "error": str(exc)})

    transaction.on_commit(enqueue)
