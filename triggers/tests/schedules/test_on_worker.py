"""SCHEDULED end to end: the real beat (``triggers-scheduler`` entry, every second) and a
real worker on PostgreSQL + Redis fire a slot into a COMPLETED run; a second beat process
changes nothing, and beat stops cleanly on SIGTERM."""
from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from triggers.models import InvocationStatus, TriggerInvocation, WorkflowTrigger
from triggers.tests.helpers import create_trigger
from workflows.models import WorkflowExecution
from workflows.tests.durability.helpers import wait_finished, wait_for
from workflows.tests.factories import make_workflow
from workflows.tests.support.processes import start_beat

from .support import iso

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def report_workflow(user):
    return make_workflow(
        user,
        variables=[{"name": "customer", "type": "STRING", "required": True}],
        steps=[{"name": "report", "type": "TRANSFORM",
                "config": {"template": "{{ trigger.type }} report for {{ input.customer }} due "
                                       "{{ trigger.payload.scheduled_for }}"}}],
    )


def arm(trigger: WorkflowTrigger, seconds: float = 2):
    """Make the trigger due a moment from now (its cron fires every minute after that)."""
    slot = timezone.now().replace(microsecond=0) + timedelta(seconds=seconds)
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=slot)
    return slot


def accepted(trigger: WorkflowTrigger, slot) -> list[TriggerInvocation]:
    return list(TriggerInvocation.objects.filter(trigger=trigger, status=InvocationStatus.ACCEPTED,
                                                 delivery_id=f"schedule:{iso(slot)}"))


def test_scheduled_trigger_fires_on_the_real_beat_and_runs_to_completed(report_workflow, shared_worker, beat):
    trigger, _ = create_trigger(report_workflow, "SCHEDULED", name="Every minute",
                                config={"cron": "* * * * *", "input": {"customer": "Ada"}})
    slot = arm(trigger)
    invocation = wait_for(lambda: accepted(trigger, slot), 30, "the scheduler to fire the slot")[0]
    finished = wait_finished(invocation.execution_id, timeout=30)
    assert finished.status == "COMPLETED", finished.error
    assert finished.trigger_type == "SCHEDULED" and finished.trigger_id == trigger.pk
    assert finished.metadata["scheduled_for"] == iso(slot)
    assert finished.output == f"SCHEDULED report for Ada due {iso(slot)}"
    lateness = (invocation.received_at - slot).total_seconds()
    assert 0 <= lateness < 5, f"fired {lateness:.2f} s after its time"
    trigger.refresh_from_db()
    assert trigger.next_run_at > slot and trigger.next_run_at.second == 0  # back on the cron's minutes
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(is_active=False)


def test_a_second_beat_fires_nothing_twice_and_stops_cleanly(report_workflow, shared_worker, beat,
                                                              service_env, tmp_path):
    second = start_beat(service_env, tmp_path)
    try:
        triggers = [create_trigger(report_workflow, "SCHEDULED", name=f"t{i}",
                                   config={"cron": "* * * * *", "input": {"customer": f"C{i}"}})[0]
                    for i in range(3)]
        slots = [arm(trigger, seconds=2) for trigger in triggers]
        for trigger, slot in zip(triggers, slots, strict=True):
            wait_for(lambda t=trigger, s=slot: accepted(t, s), 30, "the slot to fire")
        wait_for(lambda: WorkflowExecution.objects.filter(status="COMPLETED").count() >= 3, 30, "3 runs to complete")
        for trigger, slot in zip(triggers, slots, strict=True):
            assert len(accepted(trigger, slot)) == 1
            assert WorkflowExecution.objects.filter(trigger=trigger, metadata__scheduled_for=iso(slot)).count() == 1
        WorkflowTrigger.objects.update(is_active=False)
    finally:
        second.signal_group(signal.SIGTERM)
        code = second.proc.wait(timeout=15)
        second.stop()
    assert code == 0, second.log()[-3000:]
    assert "Traceback" not in second.log()
