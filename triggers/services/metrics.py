"""Run statistics of a trigger, computed by the database (two queries, whatever the volume)."""
from __future__ import annotations

from typing import Any

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q

from workflows.models import ExecutionStatus, WorkflowExecution

from ..models import WorkflowTrigger


def trigger_metrics(*, trigger: WorkflowTrigger) -> dict[str, Any]:
    """``{executions_total, by_status, success_rate, avg_duration_ms, last_execution}``.

    ``success_rate`` is COMPLETED / finished (COMPLETED + FAILED + CANCELLED), null while
    nothing finished; ``avg_duration_ms`` averages started_at → completed_at of finished runs.
    """
    executions = WorkflowExecution.objects.filter(trigger=trigger)
    finished = Q(status__in=ExecutionStatus.finished())
    timed = finished & Q(started_at__isnull=False, completed_at__isnull=False)
    totals = executions.aggregate(
        total=Count("id"),
        avg_duration=Avg(
            ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField()), filter=timed
        ),
        **{f"n_{status}": Count("id", filter=Q(status=status)) for status in ExecutionStatus.values},
    )
    by_status = {status: totals[f"n_{status}"] for status in ExecutionStatus.values}
    finished_count = sum(by_status[status] for status in ExecutionStatus.finished())
    avg = totals["avg_duration"]
    if avg is not None and not hasattr(avg, "total_seconds"):  # some backends answer microseconds
        avg_ms = round(float(avg) / 1000)
    else:
        avg_ms = round(avg.total_seconds() * 1000) if avg is not None else None
    last = executions.order_by("-created_at", "-id").values("id", "status", "created_at").first()
    return {
        "executions_total": totals["total"],
        "by_status": by_status,
        "success_rate": (
            round(by_status[ExecutionStatus.COMPLETED] / finished_count, 4) if finished_count else None
        ),
        "avg_duration_ms": avg_ms,
        "last_execution": last,
    }
