"""``manage.py beat_heartbeat``: exits 0 when beat sent a task recently (its health check)."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from triggers.beat import heartbeat_age, heartbeat_path


class Command(BaseCommand):
    help = (
        "Exit 0 if beat (triggers.beat:DatabaseScheduler) handed a task to the broker within --max-age "
        "seconds, else print why and exit 1. Beat sends the schedule sweep every second."
    )

    requires_system_checks = []  # a health check every 30 s: the file's age, nothing else

    def add_arguments(self, parser) -> None:
        parser.add_argument("--max-age", type=float, default=60.0,
                            help="seconds since beat's last send still counted healthy (default 60)")

    def handle(self, *args, max_age: float, **options) -> None:
        age = heartbeat_age()
        if age is None:
            raise CommandError(f"beat has sent no task yet: no heartbeat at {heartbeat_path()}")
        if age > max_age:
            raise CommandError(f"beat's last send was {age:.0f} s ago (more than {max_age:g} s): "
                               "it is stuck or cannot reach the broker")
        self.stdout.write(f"beat sent a task {age:.1f} s ago")
