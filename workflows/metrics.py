"""Prometheus metrics read from the database at scrape time.

Counting rows on each scrape is exact across every web and worker process (no per-process
counters to merge) and costs a few indexed aggregate queries.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .models import ExecutionStatus, StepExecutionStatus, WorkflowExecution, WorkflowStepExecution


class WorkflowCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        executions = GaugeMetricFamily(
            "promptpilot_executions", "Workflow executions by status.", labels=["status"]
        )
        counts = dict(WorkflowExecution.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in ExecutionStatus.values:
            executions.add_metric([status], counts.get(status, 0))
        yield executions

        steps = GaugeMetricFamily(
            "promptpilot_step_executions_active",
            "Step executions pending, running or WAITING (parked on an approval or a delay).", labels=["status"]
        )
        active_statuses = (StepExecutionStatus.PENDING, StepExecutionStatus.RUNNING, StepExecutionStatus.WAITING)
        active = dict(
            WorkflowStepExecution.objects.filter(
                status__in=active_statuses
            ).values_list("status").annotate(n=Count("id")).order_by()
        )
        for status in active_statuses:
            steps.add_metric([status], active.get(status, 0))
        yield steps

        oldest = WorkflowExecution.objects.filter(status=ExecutionStatus.PENDING).aggregate(t=Min("created_at"))["t"]
        yield GaugeMetricFamily(
            "promptpilot_oldest_pending_execution_age_seconds",
            "Age of the oldest PENDING execution (0 when none): a growing value means runs are not being picked up.",
            value=(timezone.now() - oldest).total_seconds() if oldest else 0.0,
        )
        lost = WorkflowStepExecution.objects.filter(
            status=StepExecutionStatus.RUNNING, lease_expires_at__lt=timezone.now()
        ).count()
        yield GaugeMetricFamily(
            "promptpilot_step_leases_expired",
            "RUNNING steps whose lease has expired (the reaper re-runs them on its next sweep).",
            value=lost,
        )


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: staff sessions may read it; scrapers send
    ``Authorization: Bearer <PROMPTPILOT_METRICS_TOKEN>``."""
    token = settings.PROMPTPILOT.get("METRICS_TOKEN") or ""
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    staff = request.user.is_authenticated and request.user.is_staff
    if not staff and not (token and given and hmac.compare_digest(given.encode(), token.encode())):
        return JsonResponse(
            {"message": "Metrics need a staff session or 'Authorization: Bearer <PROMPTPILOT_METRICS_TOKEN>'.",
             "code": "not_authenticated", "extra": {}},
            status=401,
        )
    registry = CollectorRegistry(auto_describe=True)
    registry.register(WorkflowCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
