"""``manage.py reencrypt_secrets [--dry-run]``: after prepending a new key to
PROMPTPILOT_SECRETS_KEY, encrypt every stored secret under it (docs/OPERATIONS.md,
"Rotating secrets"). Idempotent; exits 1 if a secret no configured key opens remains."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from promptpilot.common.crypto import configured_keys
from promptpilot.common.secrets_at_rest import secrets_reencrypt

SHOWN_IDS = 20


class Command(BaseCommand):
    help = ("Re-encrypt every stored secret (webhook signing secrets, connection API keys, HTTP credential "
            "headers) under the first key of PROMPTPILOT_SECRETS_KEY; the older keys must still be listed after it.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be re-encrypted; write nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        keys = len(configured_keys())
        self.stdout.write(f"{keys} key(s) configured; the first encrypts." + (" Dry run: nothing is written." if dry_run
                                                                                 else ""))
        if keys == 1:
            self.stdout.write("Only one key: nothing can be under an older one. Set PROMPTPILOT_SECRETS_KEY=new,old "
                              "to rotate.")
        reports = secrets_reencrypt(dry_run=dry_run)
        verb = "to re-encrypt" if dry_run else "re-encrypted"
        for report in reports:
            line = (f"{report.entry.label} ({report.entry.name}): {report.stored} stored, {report.reencrypted} {verb}, "
                    f"{report.current} already current, {len(report.unreadable)} unreadable")
            if report.changed_meanwhile:
                line += f", {report.changed_meanwhile} changed meanwhile (saved again under the current key)"
            self.stdout.write(line)
            if report.unreadable:
                shown = ", ".join(report.unreadable[:SHOWN_IDS])
                more = f" and {len(report.unreadable) - SHOWN_IDS} more" if len(report.unreadable) > SHOWN_IDS else ""
                self.stdout.write(f"  unreadable ids: {shown}{more}")
        total = sum(report.reencrypted for report in reports)
        current = sum(report.current for report in reports)
        unreadable = sum(len(report.unreadable) for report in reports)
        self.stdout.write(self.style.SUCCESS(f"Total: {total} {verb}, {current} already current, "
                                             f"{unreadable} unreadable."))
        if unreadable:
            raise CommandError(
                f"{unreadable} stored secret(s) open with none of the configured keys: add the key they were saved "
                "with to PROMPTPILOT_SECRETS_KEY (after the first) and run this again, or enter them again "
                "(connections, HTTP credentials in admin; rotate a webhook trigger's secret)."
            )
