"""The "next five runs" shown are what fires (both walk croniter's chain), including a
schedule restricting both day-of-month and day-of-week; DST transitions follow the
documented policy (docs/TRIGGERS.md, "Time zones and DST")."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from triggers.services.schedules import schedule_next_runs
from workflows.models import WorkflowExecution

from .support import fired_slots, run_scheduler, scheduled_trigger

pytestmark = pytest.mark.django_db


def local_days(runs: list[dict[str, str]]) -> list[str]:
    return [run["local"][:10] for run in runs]


@pytest.mark.parametrize(
    ("cron", "tz", "start"),
    [
        ("0 9 1 * 1", "UTC", datetime(2026, 1, 1, 10, 0, tzinfo=UTC)),
        ("0 9 1 * 1", "Europe/Paris", datetime(2026, 5, 20, 0, 0, tzinfo=UTC)),
        ("*/20 * * * *", "Asia/Kolkata", datetime(2026, 1, 5, 8, 0, 10, tzinfo=UTC)),
        ("30 2 * * *", "America/New_York", datetime(2026, 3, 5, 12, 0, tzinfo=UTC)),  # spring forward
        ("30 1 * * *", "America/New_York", datetime(2026, 10, 29, 12, 0, tzinfo=UTC)),  # fall back
        ("30 * * * *", "America/New_York", datetime(2026, 11, 1, 3, 45, tzinfo=UTC)),  # hourly through fall back
        ("15 3 * * 0", "Australia/Lord_Howe", datetime(2026, 3, 30, 0, 0, tzinfo=UTC)),  # a 30-minute DST shift
    ],
)
def test_next_five_runs_shown_equal_what_fires(api, workflow, cron, tz, start):
    trigger = scheduled_trigger(workflow, cron, tz=tz, now=start)
    shown = api.get(f"/api/triggers/{trigger.pk}/").json()["next_runs"]
    assert len(shown) == 5
    last = datetime.fromisoformat(shown[-1]["utc"].replace("Z", "+00:00"))
    fired = run_scheduler(until=last + timedelta(seconds=30))
    assert fired == [run["utc"] for run in shown]
    for run in shown:  # local and UTC name the same instant
        assert datetime.fromisoformat(run["local"]) == datetime.fromisoformat(run["utc"].replace("Z", "+00:00"))


def test_day_of_month_and_day_of_week_are_ored_like_posix_cron(workflow):
    trigger = scheduled_trigger(workflow, "0 9 1 * 1", now=datetime(2026, 1, 1, 10, 0, tzinfo=UTC))
    runs = schedule_next_runs(trigger=trigger)
    # Mondays 5, 12, 19, 26 January and Sunday 1 February: the 1st OR a Monday (Celery's crontab would AND them
    # and fire only on a Monday the 1st: 1 June 2026).
    assert local_days(runs) == ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26", "2026-02-01"]
    assert {run["local"][11:] for run in runs} == {"09:00:00+00:00"}


def test_spring_forward_runs_the_skipped_time_at_three_once_without_error(workflow):
    """02:30 does not exist in New York on 2026-03-08 (02:00 EST -> 03:00 EDT): croniter
    moves it to the first minute after the gap, 03:00 EDT. One run that day."""
    trigger = scheduled_trigger(workflow, "30 2 * * *", tz="America/New_York",
                                now=datetime(2026, 3, 6, 12, 0, tzinfo=UTC))
    assert [run["local"] for run in schedule_next_runs(trigger=trigger)][:4] == [
        "2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]
    fired = run_scheduler(until=datetime(2026, 3, 10, 12, 0, tzinfo=UTC))
    assert fired == ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]


def test_fall_back_runs_a_fixed_time_job_once_on_the_repeated_hour(workflow):
    """01:30 happens twice in New York on 2026-11-01 (EDT, then EST). A fixed-time job
    runs once, at the first. The scheduler ticks every 5 minutes through the night to be
    sure the second 01:30 does not fire."""
    trigger = scheduled_trigger(workflow, "30 1 * * *", tz="America/New_York",
                                now=datetime(2026, 10, 31, 12, 0, tzinfo=UTC))
    fired = run_scheduler(until=datetime(2026, 11, 2, 12, 0, tzinfo=UTC), tick=timedelta(minutes=5),
                          start=datetime(2026, 10, 31, 12, 0, 3, tzinfo=UTC))
    assert fired == ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]  # 01:30 EDT, then 01:30 EST next day
    on_the_day = [e for e in WorkflowExecution.objects.all() if e.metadata["scheduled_for_local"][:10] == "2026-11-01"]
    assert len(on_the_day) == 1 and on_the_day[0].metadata["scheduled_for_local"] == "2026-11-01T01:30:00-04:00"
    assert fired_slots(trigger) == fired


def test_fall_back_runs_an_hourly_job_in_both_repeated_hours(workflow):
    """With "*" in the hour field the job follows the clock: both 01:30s fire, an hour apart."""
    scheduled_trigger(workflow, "30 * * * *", tz="America/New_York", now=datetime(2026, 11, 1, 4, 0, tzinfo=UTC))
    fired = run_scheduler(until=datetime(2026, 11, 1, 7, 45, tzinfo=UTC), tick=timedelta(minutes=5),
                          start=datetime(2026, 11, 1, 4, 0, 3, tzinfo=UTC))
    assert fired == ["2026-11-01T04:30:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-01T07:30:00Z"]


def test_preview_is_empty_while_inactive(workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    trigger.is_active = False
    assert schedule_next_runs(trigger=trigger) == []
