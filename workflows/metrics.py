"""``/metrics``: gauges read from the database at scrape time, plus the event counters.

Counting rows on each scrape is exact across every web and worker process and costs a few
indexed aggregate queries: runs by status and trigger type, queue depth, the oldest
PENDING run, runs WAITING. The counters and histograms of events (promptpilot/common/metrics.py)
come from every process's files under ``PROMETHEUS_MULTIPROC_DIR`` when it is set
(prometheus-client's MultiProcessCollector), else from this process's own registry.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from promptpilot.common import metrics as event_metrics  # noqa: F401 (registers the counters in this process)

from .models import ExecutionStatus, StepExecutionStatus, TriggerType, WorkflowExecution, WorkflowStepExecution


class WorkflowCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        executions = GaugeMetricFamily(
            "promptpilot_executions", "Workflow executions by status and trigger type.",
            labels=["status", "trigger_type"],
        )
        rows = (WorkflowExecution.objects.values_list("status", "trigger_type").annotate(n=Count("id")).order_by())
        counts = {(status, trigger_type): n for status, trigger_type, n in rows}
        by_status: dict[str, int] = {}
        for (status, _trigger_type), n in counts.items():
            by_status[status] = by_status.get(status, 0) + n
        for status in ExecutionStatus.values:
            for trigger_type in TriggerType.values:
                executions.add_metric([status, trigger_type], counts.get((status, trigger_type), 0))
        yield executions
        yield GaugeMetricFamily(
            "promptpilot_executions_waiting",
            "Runs WAITING (for an approval, a timer or a child run) rather than running.", value=by_status.get(ExecutionStatus.WAITING, 0),
        )

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
        depth = GaugeMetricFamily(
            "promptpilot_queue_depth",
            "Work due now that no worker has taken yet: PENDING runs, and PENDING step attempts whose time "
            "has come (retries waiting out a backoff are not counted).", labels=["kind"],
        )
        depth.add_metric(["execution"], by_status.get(ExecutionStatus.PENDING, 0))
        depth.add_metric(["step"], WorkflowStepExecution.objects.filter(
            status=StepExecutionStatus.PENDING, available_at__lte=timezone.now()).count())
        yield depth
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
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)


class _ThisProcess(Collector):
    """The counters of this process (the default registry), when there is no multiprocess folder."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def metrics_registry() -> CollectorRegistry:
    """What a scrape reads: the database gauges, and every process's counters (the
    ``PROMETHEUS_MULTIPROC_DIR`` files) or, without that folder, this process's."""
    # auto_describe off: describing a collector without describe() would collect it (and
    # query the database) once more.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkflowCollector())
    folder = settings.PROMPTPILOT.get("METRICS_MULTIPROC_DIR")
    if folder:
        MultiProcessCollector(registry, path=folder)
    else:
        registry.register(_ThisProcess())
    return registry
