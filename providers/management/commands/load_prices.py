"""``manage.py load_prices prices.json``: create or update model prices from a JSON list.

The format is in docs/PROVIDER_OPERATIONS.md ("Cost"). Idempotent: loading the same file
twice changes nothing; rows the file does not mention are kept.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from promptpilot.common.errors import ApplicationError
from providers.pricing import model_prices_load


class Command(BaseCommand):
    help = "Create or update ModelPrice rows from a JSON file (see docs/PROVIDER_OPERATIONS.md)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("path", help='JSON file: [{"provider", "model", "input_per_million_usd", '
                                         '"output_per_million_usd", "currency_note"?}, ...], or "-" for stdin.')

    def handle(self, *args: Any, path: str, **options: Any) -> None:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            entries = json.loads(text)
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        try:
            created, updated = model_prices_load(entries=entries)
        except ApplicationError as exc:
            details = "".join(f"\n  {where}: {' '.join(messages)}"
                              for where, messages in exc.extra.get("errors", {}).items())
            raise CommandError(exc.message + details) from exc
        self.stdout.write(self.style.SUCCESS(f"{created} price(s) created, {updated} updated."))
