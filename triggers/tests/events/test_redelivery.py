"""Platform events whose queueing was lost are delivered late by the sweep
(``event_redeliver_missed``, beat task ``triggers.redeliver_events``), once."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from promptpilot.celery import app
from triggers.services.events import EVENT_REDELIVERY_WINDOW, event_dispatch_for_execution, event_redeliver_missed
from workflows.models import WorkflowExecution

from .helpers import event_trigger, finished_run, source_workflow, target_workflow

pytestmark = pytest.mark.django_db


def _later(seconds: float = 60):
    return timezone.now() + timedelta(seconds=seconds)


def test_an_event_never_queued_is_delivered_by_the_sweep_once(user):
    source, target = source_workflow(user), target_workflow(user)
    trigger = event_trigger(target, event="execution.failed")
    run = finished_run(source, status="FAILED", error={"type": "Timeout", "message": "late", "step": None,
                                                       "details": {}})
    # The run committed, then its process died before queueing the event: nothing was sent.

    assert event_redeliver_missed(now=_later()) == 1
    started = WorkflowExecution.objects.get(trigger=trigger)
    assert started.metadata["payload"]["execution"] == str(run.pk)
    assert started.metadata["payload"]["event"] == "execution.failed"
    assert WorkflowExecution.objects.get(pk=run.pk).event_dispatched_at is not None

    assert event_redeliver_missed(now=_later()) == 0
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1


def test_a_dispatched_event_is_marked_and_left_alone(user):
    source, target = source_workflow(user), target_workflow(user)
    trigger = event_trigger(target)
    run = finished_run(source)
    event_dispatch_for_execution(execution_id=run.pk)  # the normal path: the task ran

    assert WorkflowExecution.objects.get(pk=run.pk).event_dispatched_at is not None
    assert event_redeliver_missed(now=_later()) == 0
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1


def test_the_sweep_waits_for_the_grace_and_stops_after_the_window(user, settings):
    source, target = source_workflow(user), target_workflow(user)
    trigger = event_trigger(target)
    finished_run(source)
    grace = settings.PROMPTPILOT["ENQUEUE_GRACE_SECONDS"]

    assert event_redeliver_missed(now=timezone.now()) == 0, "the task may still be on its way"
    assert event_redeliver_missed(now=_later(grace) + EVENT_REDELIVERY_WINDOW + timedelta(minutes=1)) == 0
    assert not WorkflowExecution.objects.filter(trigger=trigger).exists()
    assert event_redeliver_missed(now=_later(grace + 1)) == 1


def test_runs_without_listeners_and_triggers_created_after_the_run_get_nothing(user):
    source, target = source_workflow(user), target_workflow(user)
    quiet = finished_run(source)
    cancelled = finished_run(source, status="CANCELLED")
    event_trigger(target)  # created after both runs ended

    assert event_redeliver_missed(now=_later()) == 0
    assert event_dispatch_for_execution(execution_id=quiet.pk) == []
    assert not WorkflowExecution.objects.filter(trigger__isnull=False).exists()
    assert WorkflowExecution.objects.get(pk=cancelled.pk).event_dispatched_at is None


def test_the_sweep_runs_from_beat():
    entry = next(e for e in app.conf.beat_schedule.values() if e["task"] == "triggers.redeliver_events")
    assert entry["task"] in app.tasks
