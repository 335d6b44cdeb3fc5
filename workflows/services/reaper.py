"""The reaper: a periodic sweep (django-celery-beat) that makes the database the guarantee.

It re-sends work whose broker message was lost, re-runs steps whose worker vanished
(lease expired), fails poison steps after MAX_LOST_ATTEMPTS as ``WorkerLost`` and fails
runs past their deadline as ``Timeout``. Safe to run from several beat processes at
once: every row it touches is locked with SKIP LOCKED and re-checked.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from .dispatch import enqueue_execution, enqueue_step
from .orchestration import _fail_timeout, error_payload, execution_fail

logger = logging.getLogger(__name__)
BATCH = 200


@dataclass
class SweepReport:
    expired_leases: int = 0
    workers_lost: int = 0
    steps_resent: int = 0
    executions_resent: int = 0
    timed_out: int = 0


def reaper_sweep() -> SweepReport:
    report = SweepReport()
    _reclaim_expired_leases(report)
    _resend_stale_steps(report)
    _resend_stale_pending_executions(report)
    _time_out_overdue_runs(report)
    if any(vars(report).values()):
        logger.info("reaper.sweep", extra=vars(report))
    return report


def _locked(queryset):
    # of=("self",): lock only the rows swept, never the runs joined in by a filter or
    # by Meta.ordering; order_by("pk") drops that ordering's join altogether.
    return queryset.select_for_update(skip_locked=True, of=("self",)).order_by("pk")


def _reclaim_expired_leases(report: SweepReport) -> None:
    now = timezone.now()
    cap = settings.PROMPTPILOT["MAX_LOST_ATTEMPTS"]
    with transaction.atomic():
        expired = _locked(
            WorkflowStepExecution.objects.filter(status=StepExecutionStatus.RUNNING, lease_expires_at__lt=now)
        )[:BATCH]
        for step_execution in expired:
            report.expired_leases += 1
            step_execution.lost_attempts += 1
            lost = f"Attempt {step_execution.attempt} lost its worker ({step_execution.worker or 'unknown'}): lease expired."
            step_execution.warnings = [*step_execution.warnings, lost]
            step_execution.lease_expires_at = None
            if step_execution.lost_attempts >= cap:
                report.workers_lost += 1
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
                step_execution.attempt += 1  # fence off the lost worker, should it ever return
                step_execution.save()
                execution = WorkflowExecution.objects.select_for_update().get(pk=step_execution.execution_id)
                if execution.status == ExecutionStatus.RUNNING:
                    execution_fail(execution=execution, error=error)
                continue
            step_execution.status = StepExecutionStatus.PENDING
            step_execution.attempt += 1  # fencing: the old attempt can no longer write
            step_execution.available_at = now
            step_execution.save()
            enqueue_step(step_execution.id, step_execution.attempt)


def _resend_stale_steps(report: SweepReport) -> None:
    """PENDING steps whose message should have run by now: the send or the message was lost."""
    now = timezone.now()
    grace = timedelta(seconds=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"])
    with transaction.atomic():
        stale = _locked(
            WorkflowStepExecution.objects.filter(
                status=StepExecutionStatus.PENDING,
                available_at__lt=now - grace,
                execution__status=ExecutionStatus.RUNNING,
            )
        )[:BATCH]
        for step_execution in stale:
            report.steps_resent += 1
            step_execution.available_at = now
            step_execution.save(update_fields=["available_at"])
            enqueue_step(step_execution.id, step_execution.attempt)  # same attempt: duplicates are no-ops


def _resend_stale_pending_executions(report: SweepReport) -> None:
    now = timezone.now()
    grace = timedelta(seconds=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"])
    with transaction.atomic():
        stale = _locked(
            WorkflowExecution.objects.filter(status=ExecutionStatus.PENDING, enqueued_at__lt=now - grace)
        ).order_by("created_at")[:BATCH]
        for execution in stale:
            report.executions_resent += 1
            execution.enqueued_at = now
            execution.save(update_fields=["enqueued_at"])
            enqueue_execution(execution.id)


def _time_out_overdue_runs(report: SweepReport) -> None:
    now = timezone.now()
    with transaction.atomic():
        overdue = _locked(
            WorkflowExecution.objects.filter(status=ExecutionStatus.RUNNING, deadline_at__lt=now)
        )[:BATCH]
        for execution in overdue:
            report.timed_out += 1
            running = execution.step_executions.filter(status=StepExecutionStatus.RUNNING).first()
            _fail_timeout(execution, running_step=running)
