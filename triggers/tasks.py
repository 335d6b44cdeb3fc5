"""Celery boundaries of the triggers app: the schedule sweeps. They take ids only, call one
service and return (see services/schedules.py and docs/TRIGGERS.md, "SCHEDULED")."""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

from .services.schedules import FIRE_SCHEDULE_TASK, PERIODIC_TASK_EXPIRE_SECONDS, schedule_fire_due, schedule_next_due

logger = logging.getLogger(__name__)

FIRE_DUE_SCHEDULES_TASK = "triggers.fire_due_schedules"
TICK = timedelta(seconds=1)  # the triggers-scheduler beat entry's interval (settings/base.py)


# NOTE: no acks_late/retry: a lost sweep is harmless, the next tick (1 s later) picks up
# every slot still due, and a sweep cut short rolls its open batch back.
@shared_task(name=FIRE_DUE_SCHEDULES_TASK, ignore_result=True, expires=5, soft_time_limit=50, time_limit=60)
def fire_due_schedules() -> dict[str, int]:
    """Beat entry ``triggers-scheduler`` (every second): fire every due scheduled time.

    If a scheduled time falls before beat's next tick, one more sweep is queued for that
    very moment (a Celery ETA), so a slot does not wait up to a second for the tick; an
    extra sweep that finds nothing due costs one indexed read.
    """
    report = schedule_fire_due(source="scheduler")
    soonest = schedule_next_due(within=TICK)
    if soonest is not None and not fire_due_schedules.app.conf.task_always_eager:  # eager would recurse
        try:
            fire_due_schedules.apply_async(eta=soonest, expires=soonest + timedelta(seconds=5))
        except Exception as exc:  # broker down: the next tick still comes
            logger.warning("schedule.arm_failed", extra={"error": str(exc)})
    return report.as_dict()


@shared_task(name=FIRE_SCHEDULE_TASK, ignore_result=True, expires=PERIODIC_TASK_EXPIRE_SECONDS,
             soft_time_limit=50, time_limit=60)
def fire_schedule(trigger_id: str) -> dict[str, int]:
    """The ``trigger:<id>`` periodic task: fire that trigger's slot if croniter says it is due."""
    return schedule_fire_due(trigger_id=trigger_id, source="beat").as_dict()
