"""PromptPilot's beat scheduler: django-celery-beat's DatabaseScheduler without the
``trigger:<id>`` records in its heap (the default of CELERY_BEAT_SCHEDULER).

Each SCHEDULED trigger keeps its ``PeriodicTask`` as the beat-visible record (see
triggers/services/schedules.py), but the ``triggers-scheduler`` entry fires them all:
it is their one coalesced wakeup. Left in the heap, thousands of records would each be
sent as a task at their minute, and celery beat compares its whole schedule on every
tick that sends one (milliseconds per entry; bench/README.md, "Schedules").
"""
from __future__ import annotations

from django_celery_beat.schedulers import DatabaseScheduler as StockDatabaseScheduler

from .services.schedules import PERIODIC_TASK_PREFIX


class DatabaseScheduler(StockDatabaseScheduler):
    """Every enabled periodic task except the ``trigger:<id>`` records."""

    def enabled_models_qs(self):
        return super().enabled_models_qs().exclude(name__startswith=PERIODIC_TASK_PREFIX)
