"""Overlap policies (skip, allow, buffer_one) and pause after N consecutive failures,
resumed by re-enabling."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from triggers.models import InvocationStatus, TriggerInvocation, WorkflowTrigger
from triggers.services.schedules import schedule_fire_due
from workflows.models import WorkflowExecution

from .support import LATE, finish, fired_slots, scheduled_trigger

pytestmark = pytest.mark.django_db
NINE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def tick(minutes: int):
    return schedule_fire_due(now=NINE + minutes * MINUTE + LATE)


def runs() -> list[WorkflowExecution]:
    return list(WorkflowExecution.objects.order_by("created_at"))


def test_skip_is_the_default_and_records_a_skipped_invocation(workflow):
    trigger = scheduled_trigger(workflow, "* * * * *", now=NINE - LATE)
    assert trigger.config["overlap"] == "skip"
    assert tick(0).fired == 1
    report = tick(1)  # the 09:00 run is still PENDING
    assert report.skipped == 1 and len(runs()) == 1
    skipped = TriggerInvocation.objects.get(status=InvocationStatus.SKIPPED)
    assert skipped.execution is None and skipped.delivery_id is None
    assert skipped.payload["scheduled_for"] == "2026-01-05T09:01:00Z"
    assert "still going (overlap: skip)" in skipped.error
    finish(runs()[0], "COMPLETED")
    assert tick(2).fired == 1
    assert fired_slots() == ["2026-01-05T09:00:00Z", "2026-01-05T09:02:00Z"]


def test_skip_also_waits_for_a_running_run(workflow):
    scheduled_trigger(workflow, "* * * * *", now=NINE - LATE)
    tick(0)
    WorkflowExecution.objects.update(status="RUNNING")
    assert tick(1).skipped == 1


def test_allow_starts_overlapping_runs(workflow):
    scheduled_trigger(workflow, "* * * * *", now=NINE - LATE, overlap="allow")
    for minute in range(3):
        assert tick(minute).fired == 1
    assert [e.status for e in runs()] == ["PENDING", "PENDING", "PENDING"]


def test_buffer_one_keeps_one_run_waiting_and_starts_it_when_the_current_one_ends(workflow):
    trigger = scheduled_trigger(workflow, "* * * * *", now=NINE - LATE, overlap="buffer_one")
    tick(0)
    assert tick(1).buffered == 1
    trigger.refresh_from_db()
    assert trigger.buffered_slot_at == NINE + MINUTE and len(runs()) == 1
    assert tick(2).skipped == 1, "at most one waiting run"
    assert "another run is already waiting" in TriggerInvocation.objects.get(status="SKIPPED").error
    finish(runs()[0], "COMPLETED")  # execution_finished starts the waiting run at once
    trigger.refresh_from_db()
    assert trigger.buffered_slot_at is None and len(runs()) == 2
    assert runs()[1].metadata["scheduled_for"] == "2026-01-05T09:01:00Z"
    assert fired_slots() == ["2026-01-05T09:00:00Z", "2026-01-05T09:01:00Z"]
    assert tick(3).buffered == 1, "the 09:01 run is going: 09:03 waits"


def test_buffer_one_waiting_run_is_started_by_the_sweep_if_the_signal_was_missed(workflow):
    trigger = scheduled_trigger(workflow, "0 * * * *", now=NINE - LATE, overlap="buffer_one")
    tick(0)
    tick(60)
    WorkflowExecution.objects.update(status="COMPLETED")  # ended without execution_finished (worker lost)
    report = tick(61)
    assert report.fired == 1 and fired_slots() == ["2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"]
    trigger.refresh_from_db()
    assert trigger.buffered_slot_at is None and trigger.next_run_at == NINE + 120 * MINUTE


def test_pause_after_n_consecutive_failures_and_resume_on_enable(api, workflow):
    trigger = scheduled_trigger(workflow, "* * * * *", now=NINE - LATE, pause_after_failures=2)
    tick(0)
    finish(runs()[-1], "FAILED")
    tick(1)
    finish(runs()[-1], "COMPLETED")  # a success resets the count
    trigger.refresh_from_db()
    assert trigger.consecutive_failures == 0 and trigger.is_active
    tick(2)
    finish(runs()[-1], "FAILED")
    tick(3)
    finish(runs()[-1], "FAILED", "provider said no")
    trigger.refresh_from_db()
    assert not trigger.is_active and trigger.next_run_at is None and trigger.paused_at is not None
    assert trigger.consecutive_failures == 2
    assert "2 consecutive failed runs" in trigger.paused_reason and "provider said no" in trigger.paused_reason
    assert not PeriodicTask.objects.get(name=f"trigger:{trigger.pk}").enabled
    assert tick(4).fired == 0
    detail = api.get(f"/api/triggers/{trigger.pk}/").json()
    assert detail["is_active"] is False and detail["paused_reason"] == trigger.paused_reason
    assert detail["next_runs"] == []

    body = api.patch(f"/api/triggers/{trigger.pk}/", {"is_active": True}, format="json").json()
    assert body["is_active"] and body["paused_at"] is None and body["paused_reason"] == ""
    assert body["next_run_at"] is not None
    trigger.refresh_from_db()
    assert trigger.consecutive_failures == 0
    assert PeriodicTask.objects.get(name=f"trigger:{trigger.pk}").enabled


def test_failures_of_other_runs_do_not_count(workflow, manual):
    trigger = scheduled_trigger(workflow, "* * * * *", now=NINE - LATE, pause_after_failures=1)
    from triggers.services.firing import trigger_fire

    other = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}).execution
    finish(other, "FAILED")
    tick(0)
    retry = WorkflowExecution.objects.filter(trigger=trigger).get()
    retry.trigger_type = "RETRY"  # a retry of a scheduled run is not a scheduled run
    retry.save()
    finish(retry, "FAILED")
    trigger.refresh_from_db()
    assert trigger.is_active and trigger.consecutive_failures == 0


def test_cancelled_runs_neither_count_nor_reset(workflow):
    trigger = scheduled_trigger(workflow, "* * * * *", now=NINE - LATE, pause_after_failures=2)
    tick(0)
    finish(runs()[-1], "FAILED")
    tick(1)
    finish(runs()[-1], "CANCELLED")
    trigger.refresh_from_db()
    assert trigger.consecutive_failures == 1 and trigger.is_active
    assert WorkflowTrigger.objects.get(pk=trigger.pk).is_active
