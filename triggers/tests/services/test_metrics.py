"""Trigger metrics (``triggers/services/metrics.py``): aggregate queries over executions."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from triggers.services.metrics import trigger_metrics
from workflows.models import WorkflowExecution
from workflows.services.definitions import workflow_current_version

pytestmark = pytest.mark.django_db


def run(trigger, status: str, *, seconds: float | None = None, created_ago: int = 0, **fields) -> WorkflowExecution:
    now = timezone.now()
    execution = WorkflowExecution.objects.create(
        workflow=trigger.workflow, version=workflow_current_version(workflow=trigger.workflow), trigger=trigger,
        trigger_type=trigger.type, status=status,
        started_at=now - timedelta(seconds=seconds) if seconds is not None else None,
        completed_at=now if seconds is not None else None, **fields,
    )
    WorkflowExecution.objects.filter(pk=execution.pk).update(created_at=now - timedelta(seconds=created_ago))
    return execution


def test_metrics_with_a_mix_of_statuses(manual, django_assert_max_num_queries):
    run(manual, "COMPLETED", seconds=1, created_ago=50)
    run(manual, "COMPLETED", seconds=3, created_ago=40)
    run(manual, "COMPLETED", seconds=2, created_ago=30)
    run(manual, "FAILED", seconds=6, created_ago=20)
    run(manual, "CANCELLED", created_ago=15)  # never started: counts as finished, has no duration
    run(manual, "RUNNING", created_ago=10)
    latest = run(manual, "PENDING", created_ago=0)
    untriggered = run(manual, "COMPLETED", seconds=100)
    WorkflowExecution.objects.filter(pk=untriggered.pk).update(trigger=None)  # not this trigger's: not counted

    with django_assert_max_num_queries(2):
        metrics = trigger_metrics(trigger=manual)

    assert metrics["executions_total"] == 7
    assert metrics["by_status"] == {"PENDING": 1, "RUNNING": 1, "WAITING": 0, "COMPLETED": 3, "FAILED": 1,
                                    "CANCELLED": 1}
    assert metrics["success_rate"] == 0.6  # 3 completed of 5 finished
    assert metrics["avg_duration_ms"] == pytest.approx(3000, abs=5)  # (1 + 3 + 2 + 6) / 4 s
    assert metrics["last_execution"]["id"] == latest.pk
    assert metrics["last_execution"]["status"] == "PENDING"


def test_metrics_without_runs(manual):
    assert trigger_metrics(trigger=manual) == {
        "executions_total": 0,
        "by_status": {"PENDING": 0, "RUNNING": 0, "WAITING": 0, "COMPLETED": 0, "FAILED": 0, "CANCELLED": 0},
        "success_rate": None,
        "avg_duration_ms": None,
        "last_execution": None,
    }


def test_success_rate_is_null_until_something_finishes(manual):
    run(manual, "RUNNING")
    metrics = trigger_metrics(trigger=manual)
    assert metrics["success_rate"] is None and metrics["avg_duration_ms"] is None
    assert metrics["executions_total"] == 1


def test_metrics_count_only_this_triggers_runs(manual, api_trigger):
    run(manual, "FAILED", seconds=1)
    run(api_trigger[0], "COMPLETED", seconds=1)
    assert trigger_metrics(trigger=manual)["by_status"]["FAILED"] == 1
    assert trigger_metrics(trigger=manual)["success_rate"] == 0.0
