"""Helpers of the schedule tests: SCHEDULED triggers made by the service with an injected
clock, a scheduler driven by that clock, and runs ended the way the engine ends them."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from triggers.models import InvocationStatus, TriggerInvocation, WorkflowTrigger
from triggers.services.schedules import schedule_fire_due, schedule_sync
from triggers.tests.helpers import create_trigger
from workflows.models import WorkflowExecution
from workflows.signals import execution_finished

T0 = datetime(2026, 1, 5, 8, 0, 10, tzinfo=UTC)  # a Monday, 08:00:10 UTC
LATE = timedelta(milliseconds=400)  # how long after a slot the simulated tick runs


def scheduled_trigger(workflow, cron: str, *, tz: str = "UTC", now: datetime = T0, name: str = "Nightly",
                      input: dict[str, Any] | None = None, **config: Any) -> WorkflowTrigger:
    """A SCHEDULED trigger created through the service, its next_run_at computed from ``now``."""
    body = {"cron": cron, "timezone": tz, "input": {"customer": "Ada"} if input is None else input, **config}
    trigger, _ = create_trigger(workflow, "SCHEDULED", name=name, config=body)
    schedule_sync(trigger=trigger, now=now)
    trigger.refresh_from_db()
    return trigger


def run_scheduler(until: datetime, *, tick: timedelta | None = None, start: datetime | None = None,
                  finish_runs: bool = True) -> list[str]:
    """Drive the scheduler with an injected clock up to ``until``: a tick just after each
    due time (or every ``tick`` from ``start``), ending each run COMPLETED unless told not
    to. Returns the ``scheduled_for`` of every ACCEPTED invocation, in order."""
    if tick is not None:
        moment = start
        while moment <= until:
            schedule_fire_due(now=moment)
            if finish_runs:
                finish_all("COMPLETED")
            moment += tick
    else:
        while True:
            due = (WorkflowTrigger.objects.filter(type="SCHEDULED", is_active=True, next_run_at__isnull=False)
                   .order_by("next_run_at").values_list("next_run_at", flat=True).first())
            if due is None or due > until:
                break
            schedule_fire_due(now=due + LATE)
            if finish_runs:
                finish_all("COMPLETED")
    return fired_slots()


def fired_slots(trigger: WorkflowTrigger | None = None) -> list[str]:
    invocations = TriggerInvocation.objects.filter(status=InvocationStatus.ACCEPTED).order_by("received_at", "id")
    if trigger is not None:
        invocations = invocations.filter(trigger=trigger)
    return [invocation.payload["scheduled_for"] for invocation in invocations]


def finish(execution: WorkflowExecution, status: str, message: str = "") -> WorkflowExecution:
    """End a run as the engine does: save the final status, then send execution_finished."""
    execution.status = status
    execution.completed_at = timezone.now()
    execution.error = {"type": "StepFailed", "message": message or "boom", "step": "greet"} if status == "FAILED" else None
    execution.save()
    execution_finished.send(sender=WorkflowExecution, execution=execution)
    return execution


def finish_all(status: str) -> None:
    for execution in WorkflowExecution.objects.filter(status__in=["PENDING", "RUNNING"]).order_by("created_at"):
        finish(execution, status)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
