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

from promptpilot.common import metrics

from ..models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from .dispatch import enqueue_execution, enqueue_step
from .transitions import execution_time_out, step_lease_expire

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
    done = {action: count for action, count in vars(report).items() if count}
    for action, count in done.items():
        metrics.REAPER_RECOVERIES.labels(action).inc(count)
    if done:
        logger.warning("reaper.recovered", extra=vars(report))
    return report


def _locked(queryset):
    # of=("self",): lock only the rows swept, never the runs joined in by a filter or
    # by Meta.ordering; order_by("pk") drops that ordering's join altogether.
    return queryset.select_for_update(skip_locked=True, of=("self",)).order_by("pk")


def _reclaim_expired_leases(report: SweepReport) -> None:
    now = timezone.now()
    with transaction.atomic():
        expired = _locked(
            WorkflowStepExecution.objects.filter(status=StepExecutionStatus.RUNNING, lease_expires_at__lt=now)
        )[:BATCH]
        for step_execution in expired:
            report.expired_leases += 1
            if step_lease_expire(step_execution=step_execution, now=now):
                report.workers_lost += 1


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
            execution_time_out(execution=execution, running_step=running)
