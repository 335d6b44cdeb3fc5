"""PromptPilot's beat scheduler: django-celery-beat's DatabaseScheduler without the
``trigger:<id>`` records in its heap (the default of CELERY_BEAT_SCHEDULER), and with a
heartbeat.

Each SCHEDULED trigger keeps its ``PeriodicTask`` as the beat-visible record (see
triggers/services/schedules.py), but the ``triggers-scheduler`` entry fires them all:
it is their one coalesced wakeup. Left in the heap, thousands of records would each be
sent as a task at their minute, and celery beat compares its whole schedule on every
tick that sends one (milliseconds per entry; bench/README.md, "Schedules").

The heartbeat: beat answers no ping, so after each task it hands to the broker the
scheduler touches PROMPTPILOT["BEAT_HEARTBEAT_FILE"]; ``manage.py beat_heartbeat`` (beat's
health check) reads how long ago that was. The schedule sweep is sent every second, so a
file older than a minute means beat is stuck, or cannot reach the broker.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler as StockDatabaseScheduler

from .services.schedules import PERIODIC_TASK_PREFIX

logger = logging.getLogger(__name__)


def heartbeat_path() -> Path:
    return Path(settings.PROMPTPILOT["BEAT_HEARTBEAT_FILE"])


def heartbeat_age() -> float | None:
    """Seconds since beat last sent a task, None if it never has (no heartbeat file)."""
    try:
        return max(0.0, time.time() - heartbeat_path().stat().st_mtime)
    except FileNotFoundError:
        return None


class DatabaseScheduler(StockDatabaseScheduler):
    """Every enabled periodic task except the ``trigger:<id>`` records; a heartbeat per send."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        heartbeat_path().parent.mkdir(parents=True, exist_ok=True)

    def enabled_models_qs(self):
        return super().enabled_models_qs().exclude(name__startswith=PERIODIC_TASK_PREFIX)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)  # raises if not sent
        try:
            heartbeat_path().touch()
        except OSError as exc:
            logger.warning("beat.heartbeat_unwritable", extra={"path": str(heartbeat_path()), "error": str(exc)})
        return result
