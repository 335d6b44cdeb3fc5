"""The reaper: a periodic sweep (django-celery-beat) that makes the database the guarantee.

It re-sends work whose broker message was lost, re-runs steps whose worker vanished
(lease expired), fails poison steps after MAX_LOST_ATTEMPTS as ``WorkerLost``, fails
runs past their deadline (waiting ones too) as ``Timeout``, sends the timer of waits
that end before its next sweep (when the park could not: longer than a countdown may
be), resumes due waits whose timer message was lost, and parents whose child run ended
without resuming them. Safe to run from several beat processes at
once: every row it touches is locked with SKIP LOCKED and re-checked.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from promptpilot.common import metrics

from ..models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from .dispatch import enqueue_execution, enqueue_step, enqueue_wait_timer
from .orchestration import wait_timer_fire
from .transitions import UNFINISHED_STEP_STATUSES, child_finished, execution_time_out, step_lease_expire

logger = logging.getLogger(__name__)
BATCH = 200


@dataclass
class SweepReport:
    expired_leases: int = 0
    workers_lost: int = 0
    steps_resent: int = 0
    executions_resent: int = 0
    timed_out: int = 0
    timers_sent: int = 0
    waits_resumed: int = 0
    parents_resumed: int = 0


def reaper_sweep() -> SweepReport:
    report = SweepReport()
    _reclaim_expired_leases(report)
    _resend_stale_steps(report)
    _resend_stale_pending_executions(report)
    _time_out_overdue_runs(report)
    _send_timers_due_soon(report)
    _resume_overdue_waits(report)
    _resume_parents_of_finished_children(report)
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
            WorkflowExecution.objects.filter(status__in=[ExecutionStatus.RUNNING, ExecutionStatus.WAITING],
                                             deadline_at__lt=now)
        )[:BATCH]
        for execution in overdue:
            report.timed_out += 1
            # The step the run was on: in flight, waiting, or PENDING (its worker was lost
            # and it waits to be re-run, or a retry's backoff is counting down).
            running = execution.step_executions.filter(
                status__in=UNFINISHED_STEP_STATUSES).order_by("step_order").first()
            execution_time_out(execution=execution, running_step=running)


def _send_timers_due_soon(report: SweepReport) -> None:
    """Waits ending before the next sweep whose park sent no countdown (it would have been
    longer than MAX_BACKOFF_SECONDS): send it now, for the rest of the wait."""
    now = timezone.now()
    conf = settings.PROMPTPILOT
    soon = now + timedelta(seconds=conf["REAPER_INTERVAL_SECONDS"])
    longer_than_countdown = F("started_at") + timedelta(seconds=conf["MAX_BACKOFF_SECONDS"])
    due = (WorkflowStepExecution.objects.filter(status=StepExecutionStatus.WAITING, available_at__gt=now,
                                                available_at__lte=soon)
           .filter(available_at__gt=longer_than_countdown))
    for step_execution_id, available_at in due.order_by("available_at").values_list("pk", "available_at")[:BATCH]:
        report.timers_sent += 1
        enqueue_wait_timer(step_execution_id, countdown=max((available_at - now).total_seconds(), 0))


def _resume_overdue_waits(report: SweepReport) -> None:
    """Waits whose time passed more than the grace ago and are still WAITING: their timer
    message was lost (or never sent). Each resume is fenced: one racing the message is a no-op."""
    grace = timedelta(seconds=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"])
    overdue = (WorkflowStepExecution.objects.filter(status=StepExecutionStatus.WAITING,
                                                    available_at__lt=timezone.now() - grace)
               .order_by("available_at").values_list("pk", flat=True)[:BATCH])
    for step_execution_id in list(overdue):
        try:
            if wait_timer_fire(step_execution_id=step_execution_id) == "resumed":
                report.waits_resumed += 1
        except Exception:  # one broken run must not stop the sweep
            logger.exception("reaper.resume_failed", extra={"step_execution_id": str(step_execution_id)})


def _resume_parents_of_finished_children(report: SweepReport) -> None:
    """Child runs that ended more than the grace ago while their parent's WORKFLOW step
    still waits: the resume after the child's commit was lost (a crash, a deadlock)."""
    grace = timedelta(seconds=settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"])
    ended = (WorkflowExecution.objects.filter(parent_step__status=StepExecutionStatus.WAITING,
                                              status__in=ExecutionStatus.finished(),
                                              completed_at__lt=timezone.now() - grace)
             .order_by("completed_at").values_list("pk", flat=True)[:BATCH])
    for execution_id in list(ended):
        try:
            if child_finished(execution_id=execution_id) is not None:
                report.parents_resumed += 1
        except Exception:
            logger.exception("reaper.parent_resume_failed", extra={"execution_id": str(execution_id)})
