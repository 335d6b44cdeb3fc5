"""``schedule_fire_due`` (the ``triggers-scheduler`` beat entry) and ``fire_schedule`` (the
per-trigger periodic task): each scheduled time makes exactly one execution."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from triggers.models import InvocationStatus, TriggerInvocation, WorkflowTrigger
from triggers.services.schedules import schedule_fire_due
from triggers.tasks import fire_due_schedules, fire_schedule
from triggers.tests.helpers import customer_workflow
from workflows.models import WorkflowExecution, WorkflowVariable
from workflows.services.definitions import workflow_version_create

from .support import LATE, T0, finish_all, fired_slots, iso, run_scheduler, scheduled_trigger

pytestmark = pytest.mark.django_db
NINE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_a_due_slot_starts_a_scheduled_run_and_advances_next_run_at(workflow, django_capture_on_commit_callbacks):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    assert trigger.next_run_at == NINE
    assert schedule_fire_due(now=NINE - timedelta(seconds=1)).fired == 0, "not due yet"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report = schedule_fire_due(now=NINE + LATE)
    assert report.fired == 1 and len(callbacks) == 1, "the run is enqueued once, after commit"
    invocation = TriggerInvocation.objects.get()
    execution = invocation.execution
    assert invocation.status == InvocationStatus.ACCEPTED and invocation.delivery_id == "schedule:2026-01-05T09:00:00Z"
    assert invocation.payload == {"scheduled_for": "2026-01-05T09:00:00Z", "scheduled_for_local":
                                  "2026-01-05T09:00:00+00:00", "timezone": "UTC"}
    assert execution.trigger_type == "SCHEDULED" and execution.trigger_id == trigger.pk
    assert execution.metadata["scheduled_for"] == "2026-01-05T09:00:00Z"
    assert execution.metadata["payload"]["scheduled_for"] == "2026-01-05T09:00:00Z"
    assert execution.input == {"customer": "Ada", "amount": None} and execution.started_by is None
    trigger.refresh_from_db()
    assert trigger.next_run_at == NINE + timedelta(days=1) and trigger.last_triggered_at is not None


def test_firing_the_same_slot_twice_makes_one_execution(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    schedule_fire_due(now=NINE + LATE)
    schedule_fire_due(now=NINE + LATE)  # the row already moved on
    # A second beat that still believes 09:00 is due (e.g. it read next_run_at before the first commit):
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=NINE)
    report = schedule_fire_due(now=NINE + 2 * LATE)
    assert (report.fired, report.duplicate, report.skipped) == (0, 1, 0), "a repeat, not an overlap"
    assert WorkflowExecution.objects.count() == 1
    assert TriggerInvocation.objects.filter(status=InvocationStatus.DUPLICATE).count() == 1
    trigger.refresh_from_db()
    assert trigger.next_run_at == NINE + timedelta(days=1)


def test_the_periodic_task_and_the_scheduler_together_fire_a_slot_once(workflow):
    trigger = scheduled_trigger(workflow, "* * * * *", now=timezone.now())
    slot = timezone.now().replace(microsecond=0) - timedelta(seconds=1)
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=slot)  # due now, by the real clock
    assert fire_schedule(str(trigger.pk))["fired"] == 1  # beat's trigger:<id> entry
    assert fire_due_schedules()["fired"] == 0  # the scheduler's tick a moment later
    assert fire_schedule(str(trigger.pk))["fired"] == 0  # a second beat process
    assert WorkflowExecution.objects.count() == 1 and fired_slots() == [iso(slot)]


def test_the_periodic_task_fires_nothing_that_is_not_due(workflow):
    # Celery's crontab (AND of day-of-month and day-of-week) may call the task at times
    # croniter (OR) does not list; the task then finds nothing due and starts nothing.
    trigger = scheduled_trigger(workflow, "0 9 1 * 1", now=timezone.now())
    assert not any(fire_schedule(str(trigger.pk)).values())
    assert not WorkflowExecution.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_beats_firing_the_same_slot_concurrently_make_one_execution(user):
    workflow = customer_workflow(user)
    triggers = [scheduled_trigger(workflow, "0 9 * * *", name=f"t{i}") for i in range(5)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def beat(trigger_id=None) -> None:
        try:
            barrier.wait(timeout=10)
            schedule_fire_due(now=NINE + LATE, trigger_id=trigger_id, batch=2, exclusive=False)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat), threading.Thread(target=beat),
               threading.Thread(target=beat, args=(triggers[0].pk,)), threading.Thread(target=beat, args=(triggers[1].pk,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert WorkflowExecution.objects.count() == 5
    for trigger in triggers:
        assert fired_slots(trigger) == ["2026-01-05T09:00:00Z"]


@pytest.mark.django_db(transaction=True)
def test_two_threads_racing_past_the_row_lock_still_make_one_execution(user):
    """Even when both believe the slot is due (next_run_at reset between them), the
    unique (trigger, delivery_id) decides."""
    workflow = customer_workflow(user)
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(3):
                WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=NINE)
                schedule_fire_due(now=NINE + LATE, exclusive=False)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert WorkflowExecution.objects.count() == 1
    assert TriggerInvocation.objects.filter(status=InvocationStatus.ACCEPTED).count() == 1


def test_missed_slots_while_disabled_are_not_replayed(api, workflow):
    trigger = scheduled_trigger(workflow, "0 * * * *")  # hourly; first at 09:00
    run_scheduler(until=datetime(2026, 1, 5, 10, 30, tzinfo=UTC))
    assert fired_slots() == ["2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"]
    api.patch(f"/api/triggers/{trigger.pk}/", {"is_active": False}, format="json")
    schedule_fire_due(now=datetime(2026, 1, 5, 15, 0, 5, tzinfo=UTC))  # disabled: nothing
    from triggers.services.schedules import schedule_sync

    trigger.refresh_from_db()
    trigger.is_active = True
    trigger.save(update_fields=["is_active"])
    schedule_sync(trigger=trigger, previous={"config": trigger.config, "is_active": False},
                  now=datetime(2026, 1, 5, 15, 20, tzinfo=UTC))
    run_scheduler(until=datetime(2026, 1, 5, 16, 30, tzinfo=UTC))
    assert fired_slots() == ["2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z", "2026-01-05T16:00:00Z"]


def test_after_scheduler_downtime_only_the_latest_missed_slot_fires(workflow):
    trigger = scheduled_trigger(workflow, "*/10 * * * *")  # next: 08:10
    report = schedule_fire_due(now=datetime(2026, 1, 5, 9, 47, 12, tzinfo=UTC))  # down from 08:05 to 09:47
    assert report.fired == 1 and fired_slots() == ["2026-01-05T09:40:00Z"]
    missed = TriggerInvocation.objects.get(status=InvocationStatus.SKIPPED)  # one record, not one per time
    assert report.missed == 1 and missed.execution is None
    assert (missed.payload["scheduled_for"], missed.payload["missed_until"]) == ("2026-01-05T08:10:00Z",
                                                                                  "2026-01-05T09:40:00Z")
    assert "not replayed" in missed.error
    trigger.refresh_from_db()
    assert trigger.next_run_at == datetime(2026, 1, 5, 9, 50, tzinfo=UTC)


def test_input_that_no_longer_fits_is_recorded_and_the_schedule_goes_on(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    WorkflowVariable.objects.create(workflow=workflow, name="region", type="STRING", required=True)
    workflow_version_create(workflow=workflow)  # the builder's edit, as the API and admin record it
    report = schedule_fire_due(now=NINE + LATE)
    assert report.failed == 1 and not WorkflowExecution.objects.exists()
    invocation = TriggerInvocation.objects.get()
    assert invocation.status == InvocationStatus.INVALID_INPUT and "region" in invocation.error
    trigger.refresh_from_db()
    assert trigger.next_run_at == NINE + timedelta(days=1) and trigger.is_active


def test_an_inactive_workflow_is_recorded_rejected(workflow):
    scheduled_trigger(workflow, "0 9 * * *")
    workflow.is_active = False
    workflow.save()
    assert schedule_fire_due(now=NINE + LATE).failed == 1
    assert TriggerInvocation.objects.get().status == InvocationStatus.REJECTED


def test_a_stored_config_that_cannot_be_computed_pauses_the_trigger(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(config={"cron": "0 0 30 2 *", "timezone": "UTC"})
    assert schedule_fire_due(now=NINE + LATE).paused == 1
    trigger.refresh_from_db()
    assert not trigger.is_active and trigger.next_run_at is None and trigger.paused_at is not None
    assert "cannot be computed" in trigger.paused_reason
    assert schedule_fire_due(now=NINE + 2 * LATE).paused == 0


def test_many_due_triggers_are_fired_in_batches(workflow):
    for i in range(7):
        scheduled_trigger(workflow, "0 9 * * *", name=f"t{i}")
    report = schedule_fire_due(now=NINE + LATE, batch=3)
    assert report.fired == 7
    assert not WorkflowTrigger.objects.filter(next_run_at__lte=NINE).exists()
    finish_all("COMPLETED")


def test_only_scheduled_active_triggers_with_a_due_slot_fire(workflow, manual):
    later = scheduled_trigger(workflow, "0 10 * * *", name="later")
    off = scheduled_trigger(workflow, "0 9 * * *", name="off")
    WorkflowTrigger.objects.filter(pk=off.pk).update(is_active=False)
    assert schedule_fire_due(now=NINE + LATE).fired == 0
    assert iso(WorkflowTrigger.objects.get(pk=later.pk).next_run_at) == "2026-01-05T10:00:00Z"
    assert T0 < NINE


@pytest.mark.django_db(transaction=True)
def test_up_to_the_configured_number_of_sweeps_run_at_once_a_further_tick_returns_at_once(user, settings):
    from triggers.services.schedules import SWEEP_LOCK_KEY

    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "SCHEDULE_SWEEPERS": 2}
    workflow = customer_workflow(user)
    first = scheduled_trigger(workflow, "0 9 * * *", name="first")
    held = threading.Event()
    release = threading.Event()
    running = [SWEEP_LOCK_KEY]

    def running_sweeps() -> None:  # other workers' sweeps, in the middle of their work
        with connection.cursor() as cursor:
            for key in running:
                cursor.execute("SELECT pg_advisory_lock(%s)", [key])
            held.set()
            release.wait(timeout=10)
            for key in running:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        connection.close()

    def with_sweeps_running(keys: list[int]) -> int:
        running[:] = keys
        held.clear()
        release.clear()
        thread = threading.Thread(target=running_sweeps)
        thread.start()
        try:
            assert held.wait(timeout=10)
            return schedule_fire_due(now=NINE + LATE).fired
        finally:
            release.set()
            thread.join(timeout=10)

    assert with_sweeps_running([SWEEP_LOCK_KEY]) == 1, "one sweep running: a second one helps"
    assert fired_slots(first) == ["2026-01-05T09:00:00Z"]
    scheduled_trigger(workflow, "0 9 * * *", name="second")
    assert with_sweeps_running([SWEEP_LOCK_KEY, SWEEP_LOCK_KEY + 1]) == 0, "two running: they will fire it"
    assert schedule_fire_due(now=NINE + LATE).fired == 1


def test_a_tick_just_before_a_due_time_queues_a_sweep_for_that_moment(workflow, monkeypatch):
    trigger = scheduled_trigger(workflow, "* * * * *", now=timezone.now())
    soon = timezone.now() + timedelta(milliseconds=600)
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=soon)
    sent: list[dict] = []
    monkeypatch.setattr(fire_due_schedules, "apply_async", lambda **options: sent.append(options))
    fire_due_schedules()
    assert len(sent) == 1 and sent[0]["eta"] == soon
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(next_run_at=timezone.now() + timedelta(seconds=30))
    fire_due_schedules()
    assert len(sent) == 1, "nothing due before the next tick: beat's tick is enough"


def test_a_fired_slot_is_stamped_on_the_triggers_periodic_task_record(workflow):
    from django_celery_beat.models import PeriodicTask

    trigger = scheduled_trigger(workflow, "0 9 * * *")
    record = PeriodicTask.objects.get(name=f"trigger:{trigger.pk}")
    assert record.total_run_count == 0 and record.last_run_at is None
    before = timezone.now()
    schedule_fire_due(now=NINE + LATE)
    finish_all("COMPLETED")
    schedule_fire_due(now=NINE + timedelta(days=1) + LATE)
    record.refresh_from_db()
    assert record.total_run_count == 2 and before <= record.last_run_at <= timezone.now()
    schedule_fire_due(now=NINE + timedelta(days=1) + 2 * LATE)  # nothing due: not stamped
    record.refresh_from_db()
    assert record.total_run_count == 2


def test_a_sweep_whose_first_batch_is_full_asks_for_helpers_once(workflow):
    for i in range(7):
        scheduled_trigger(workflow, "0 9 * * *", name=f"t{i}")
    calls: list[int] = []
    report = schedule_fire_due(now=NINE + LATE, batch=3, on_backlog=lambda: calls.append(1))
    assert report.fired == 7 and calls == [1]
    for i in range(2):
        scheduled_trigger(workflow, "0 10 * * *", name=f"u{i}")
    assert schedule_fire_due(now=NINE + timedelta(hours=1) + LATE, batch=3,
                             on_backlog=lambda: calls.append(1)).fired == 2
    assert calls == [1], "a batch that is not full: no helpers"


def test_a_busy_moment_just_ahead_arms_one_sweep_per_batch_up_to_the_limit(workflow, monkeypatch, settings):
    from triggers.services import schedules

    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "SCHEDULE_SWEEPERS": 3}
    monkeypatch.setattr(schedules, "SWEEP_BATCH", 2)
    sent: list[dict] = []
    monkeypatch.setattr(fire_due_schedules, "apply_async", lambda **options: sent.append(options))
    for count, expected in ((3, 2), (9, 3)):  # 3 due: 2 batches; 9 due: 5 batches, 3 sweepers
        WorkflowTrigger.objects.all().delete()
        for i in range(count):
            scheduled_trigger(workflow, "* * * * *", name=f"t{i}", now=timezone.now())
        soon = timezone.now() + timedelta(milliseconds=800)
        WorkflowTrigger.objects.update(next_run_at=soon)
        sent.clear()
        fire_due_schedules()
        assert [options["eta"] for options in sent] == [soon] * expected


@pytest.mark.django_db(transaction=True)
def test_sweeps_running_in_parallel_fire_every_due_slot_exactly_once(user, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "SCHEDULE_SWEEPERS": 3}
    workflow = customer_workflow(user)
    triggers = [scheduled_trigger(workflow, "0 9 * * *", name=f"t{i}") for i in range(12)]
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=10)
            schedule_fire_due(now=NINE + LATE, batch=2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert WorkflowExecution.objects.count() == 12
    for trigger in triggers:
        assert fired_slots(trigger) == ["2026-01-05T09:00:00Z"]


def test_a_sweep_pins_the_latest_version_and_stamps_last_triggered_at_with_its_time(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    WorkflowVariable.objects.filter(workflow=workflow, name="amount").update(required=False)
    latest = workflow_version_create(workflow=workflow, note="edited before 09:00")

    schedule_fire_due(now=NINE + LATE)

    execution = WorkflowExecution.objects.get(trigger=trigger)
    assert execution.version_id == latest.pk
    trigger.refresh_from_db()
    assert trigger.last_triggered_at == NINE + LATE
