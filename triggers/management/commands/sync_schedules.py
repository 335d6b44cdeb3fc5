"""``manage.py sync_schedules``: reconcile SCHEDULED triggers with django-celery-beat."""
from __future__ import annotations

from django.core.management.base import BaseCommand

from triggers.services.schedules import schedule_sync_all


class Command(BaseCommand):
    help = (
        "Create or update the trigger:<id> periodic task of every SCHEDULED trigger (e.g. after changing "
        "PROMPTPILOT_SCHEDULE_MIRROR_TASKS), give active ones without next_run_at their next run, and delete "
        "periodic tasks whose trigger no longer exists."
    )

    def handle(self, *args, **options) -> None:
        counts = schedule_sync_all()
        self.stdout.write(", ".join(f"{name}: {value}" for name, value in counts.items()))
