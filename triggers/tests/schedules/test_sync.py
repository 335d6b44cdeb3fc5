"""Create / update / enable / disable / delete keep next_run_at and the django-celery-beat
mirror (PeriodicTask ``trigger:<id>``) in step: no orphaned periodic tasks."""
from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from triggers.models import WorkflowTrigger
from triggers.services.schedules import schedule_parse, schedule_sync
from triggers.services.triggers import trigger_delete, trigger_update

from .support import T0, scheduled_trigger

pytestmark = pytest.mark.django_db


def task_of(trigger) -> PeriodicTask | None:
    return PeriodicTask.objects.select_related("crontab").filter(name=f"trigger:{trigger.pk}").first()


def crontab_of(task: PeriodicTask) -> tuple[str, str, str, str, str, str]:
    c = task.crontab
    return c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week, str(c.timezone)


def test_create_makes_an_enabled_periodic_task_mirroring_the_cron(workflow):
    trigger = scheduled_trigger(workflow, "*/15 9-17 * * MON-FRI", tz="Europe/Paris")
    task = task_of(trigger)
    assert task.task == "triggers.fire_schedule" and json.loads(task.args) == [str(trigger.pk)]
    assert task.enabled and task.interval is None and task.expire_seconds
    assert crontab_of(task) == ("*/15", "9-17", "*", "*", "MON-FRI", "Europe/Paris")
    assert "Nightly" in task.description


def test_fields_celery_cannot_parse_are_mirrored_expanded(workflow):
    task = task_of(scheduled_trigger(workflow, "0 9 ? * 7"))  # "?" and Sunday as 7: croniter only
    assert crontab_of(task)[:5] == ("0", "9", "*", "*", "0")


def test_update_of_cron_and_time_zone_updates_the_task_and_recomputes_next_run(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    before = trigger.next_run_at
    config = {**trigger.config, "timezone": "Asia/Tokyo"}
    now = timezone.now()
    trigger_update(trigger=trigger, data={"config": config})
    trigger.refresh_from_db()
    assert trigger.next_run_at == schedule_parse(cron="0 9 * * *", timezone_name="Asia/Tokyo").next_after(now)
    assert trigger.next_run_at != before and trigger.next_run_at.astimezone(UTC).hour == 0  # 09:00 JST
    assert crontab_of(task_of(trigger)) == ("0", "9", "*", "*", "*", "Asia/Tokyo")
    trigger_update(trigger=trigger, data={"config": {**config, "cron": "30 18 * * 5"}})
    assert crontab_of(task_of(trigger)) == ("30", "18", "*", "*", "5", "Asia/Tokyo")
    assert PeriodicTask.objects.filter(name__startswith="trigger:").count() == 1


def test_changing_time_zone_through_the_api_recomputes_next_run_at(api, workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *", tz="UTC", now=timezone.now())
    before = api.get(f"/api/triggers/{trigger.pk}/").json()
    now = timezone.now()
    response = api.patch(f"/api/triggers/{trigger.pk}/", {"config": {**trigger.config, "timezone": "America/Denver"}},
                         format="json")
    assert response.status_code == 200, response.json()
    after = response.json()
    expected = schedule_parse(cron="0 9 * * *", timezone_name="America/Denver").next_after(now)
    assert after["next_run_at"] == expected.isoformat().replace("+00:00", "Z") != before["next_run_at"]
    assert after["next_runs"][0]["utc"] == after["next_run_at"]
    assert after["next_runs"][0]["local"][10:] in ("T09:00:00-07:00", "T09:00:00-06:00")


def test_renaming_or_changing_input_keeps_next_run_at(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    before = trigger.next_run_at
    trigger_update(trigger=trigger, data={"name": "Renamed", "config": {**trigger.config, "input": {"customer": "B"}}})
    trigger.refresh_from_db()
    assert trigger.next_run_at == before, "a due slot must not be lost to an unrelated edit"


def test_disable_disables_the_task_and_clears_next_run_enable_recomputes_from_now(workflow):
    trigger = scheduled_trigger(workflow, "0 * * * *")
    trigger_update(trigger=trigger, data={"is_active": False})
    trigger.refresh_from_db()
    assert trigger.next_run_at is None and not task_of(trigger).enabled
    later = T0 + timedelta(hours=5, minutes=20)
    trigger.is_active = True
    trigger.save(update_fields=["is_active"])
    schedule_sync(trigger=trigger, previous={"config": trigger.config, "is_active": False}, now=later)
    trigger.refresh_from_db()
    assert trigger.next_run_at == datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    assert task_of(trigger).enabled


def test_enable_through_the_api_enables_the_task(api, workflow):
    trigger = scheduled_trigger(workflow, "0 * * * *")
    assert api.patch(f"/api/triggers/{trigger.pk}/", {"is_active": False}, format="json").json()["next_run_at"] is None
    body = api.patch(f"/api/triggers/{trigger.pk}/", {"is_active": True}, format="json").json()
    assert body["next_run_at"] is not None and len(body["next_runs"]) == 5
    assert task_of(trigger).enabled


def test_delete_removes_the_periodic_task(api, workflow):
    kept = scheduled_trigger(workflow, "0 9 * * *", name="kept")
    gone = scheduled_trigger(workflow, "0 10 * * *", name="gone")
    assert api.delete(f"/api/triggers/{gone.pk}/").status_code == 204
    assert task_of(gone) is None and task_of(kept) is not None
    trigger_delete(trigger=kept)
    assert not PeriodicTask.objects.filter(name__startswith="trigger:").exists()


def test_deleting_the_workflow_leaves_no_orphaned_periodic_task(workflow):
    scheduled_trigger(workflow, "0 9 * * *", name="a")
    scheduled_trigger(workflow, "0 10 * * *", name="b")
    assert PeriodicTask.objects.filter(name__startswith="trigger:").count() == 2
    workflow.delete()
    assert not WorkflowTrigger.objects.exists()
    assert not PeriodicTask.objects.filter(name__startswith="trigger:").exists()


def test_a_scheduled_trigger_with_an_unusable_stored_config_can_still_be_disabled(workflow):
    trigger = WorkflowTrigger.objects.create(workflow=workflow, type="SCHEDULED", name="legacy",
                                             config={"cron": "not cron"}, is_active=True)
    updated = trigger_update(trigger=trigger, data={"is_active": False, "name": "legacy (off)"})
    assert not updated.is_active and updated.next_run_at is None


def test_mirror_tasks_switched_off_are_kept_in_sync_but_disabled(workflow, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "SCHEDULE_MIRROR_TASKS": False}
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    task = task_of(trigger)
    assert not task.enabled and crontab_of(task)[:2] == ("0", "9")
    trigger_update(trigger=trigger, data={"config": {**trigger.config, "cron": "0 10 * * *"}})
    assert crontab_of(task_of(trigger))[:2] == ("0", "10") and not task_of(trigger).enabled
    trigger.refresh_from_db()
    assert trigger.next_run_at is not None, "the triggers-scheduler entry still fires it"


def test_sync_schedules_command_reconciles_beat_with_the_triggers(workflow, settings):
    import uuid

    from django.core.management import call_command
    from django_celery_beat.models import CrontabSchedule

    kept = scheduled_trigger(workflow, "0 9 * * *")
    legacy = WorkflowTrigger.objects.create(workflow=workflow, type="SCHEDULED", name="made in admin",
                                            config={"cron": "*/5 * * * *", "timezone": "UTC", "input": {}})
    orphan = PeriodicTask.objects.create(name=f"trigger:{uuid.uuid4()}", task="triggers.fire_schedule",
                                         crontab=CrontabSchedule.objects.create(minute="0"))
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "SCHEDULE_MIRROR_TASKS": False}
    out = io.StringIO()
    call_command("sync_schedules", stdout=out)
    assert "orphans_deleted: 1" in out.getvalue()
    assert not PeriodicTask.objects.filter(pk=orphan.pk).exists()
    legacy.refresh_from_db()
    assert legacy.next_run_at is not None and task_of(legacy) is not None
    assert not task_of(kept).enabled and not task_of(legacy).enabled


def test_promptpilots_beat_scheduler_leaves_the_trigger_records_to_the_sweep(workflow):
    """Beat's own heap holds the triggers-scheduler entry, not one entry per trigger (the
    records stay enabled and visible); django-celery-beat's stock scheduler would run them."""
    from django_celery_beat.schedulers import DatabaseScheduler as StockScheduler

    from promptpilot.celery import app
    from triggers.beat import DatabaseScheduler

    trigger = scheduled_trigger(workflow, "*/5 * * * *")
    PeriodicTask.objects.create(name="workflows-reaper", task="workflows.reap",
                                crontab=task_of(trigger).crontab)  # as beat installs its own entries
    assert task_of(trigger).enabled
    # lazy: what beat loads, without its start-up (which commits and reconnects).
    ours = DatabaseScheduler(app=app, lazy=True).all_as_schedule()
    assert "workflows-reaper" in ours and not any(name.startswith("trigger:") for name in ours)
    assert f"trigger:{trigger.pk}" in StockScheduler(app=app, lazy=True).all_as_schedule()


def test_beat_uses_promptpilots_scheduler_by_default():
    from promptpilot.celery import app

    assert app.conf.beat_scheduler == "triggers.beat:DatabaseScheduler"
