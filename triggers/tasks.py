"""Celery boundaries of the triggers app: the schedule sweeps. They take ids only, call one
service and return (see services/schedules.py and docs/TRIGGERS.md, "SCHEDULED")."""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

from promptpilot.common import task_names

from .services import schedules
from .services.schedules import (
    FIRE_SCHEDULE_TASK,
    PERIODIC_TASK_EXPIRE_SECONDS,
    schedule_fire_due,
    schedule_next_due,
    schedule_sweepers,
    schedule_sweeps_for,
)

logger = logging.getLogger(__name__)

FIRE_DUE_SCHEDULES_TASK = task_names.FIRE_DUE_SCHEDULES
TICK = timedelta(seconds=1)  # the triggers-scheduler beat entry's interval (settings/base.py)


def _send_sweeps(count: int, **options) -> None:
    for _ in range(count):
        try:
            fire_due_schedules.apply_async(**options)
        except Exception as exc:  # broker down: the next tick still comes
            logger.warning("schedule.arm_failed", extra={"error": str(exc)})
            return


# NOTE: no acks_late/retry: a lost sweep is harmless, the next tick (1 s later) picks up
# every slot still due, and a sweep cut short rolls its open batch back.
@shared_task(name=FIRE_DUE_SCHEDULES_TASK, ignore_result=True, expires=5, soft_time_limit=50, time_limit=60)
def fire_due_schedules() -> dict[str, int]:
    """Beat entry ``triggers-scheduler`` (every second): fire every due scheduled time.

    If scheduled times fall before beat's next tick, sweeps are queued for that very
    moment (a Celery ETA), so a slot does not wait up to a second for the tick: one per
    batch of times due then, up to PROMPTPILOT_SCHEDULE_SWEEPERS, so the worker's
    processes fire a busy minute together. A sweep whose first batch is full asks for
    helpers at once (after downtime, say, nothing was queued ahead); a sweep that finds
    every sweeper slot taken, or nothing due, costs one or two indexed reads.
    """
    eager = fire_due_schedules.app.conf.task_always_eager  # eager sweeps would recurse
    helpers = 0 if eager else schedule_sweepers() - 1
    report = schedule_fire_due(source="scheduler", on_backlog=(lambda: _send_sweeps(helpers)) if helpers else None)
    soonest, due = schedule_next_due(within=TICK, count_up_to=schedules.SWEEP_BATCH * schedule_sweepers())
    if soonest is not None and not eager:
        _send_sweeps(schedule_sweeps_for(due=due), eta=soonest, expires=soonest + timedelta(seconds=5))
    return report.as_dict()


@shared_task(name=FIRE_SCHEDULE_TASK, ignore_result=True, expires=PERIODIC_TASK_EXPIRE_SECONDS,
             soft_time_limit=50, time_limit=60)
def fire_schedule(trigger_id: str) -> dict[str, int]:
    """The ``trigger:<id>`` periodic task, sent only by a beat on django-celery-beat's stock
    scheduler (PromptPilot's leaves it out): fire that trigger's slot if croniter says it
    is due; usually the sweep got there first and this is one indexed read."""
    return schedule_fire_due(trigger_id=trigger_id, source="beat").as_dict()
