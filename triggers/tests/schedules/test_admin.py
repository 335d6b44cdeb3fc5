"""The trigger admin shows next_run_at, the next five runs (as fired) and the pause reason."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from triggers.models import WorkflowTrigger

from .support import scheduled_trigger

pytestmark = pytest.mark.django_db


def test_change_page_shows_the_next_five_runs_and_the_periodic_task(admin_client, workflow):
    trigger = scheduled_trigger(workflow, "0 9 1 * 1", now=datetime(2026, 1, 1, 10, 0, tzinfo=UTC))
    html = admin_client.get(reverse("admin:triggers_workflowtrigger_change", args=[trigger.pk])).content.decode()
    for day in ("2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26", "2026-02-01"):
        assert f"{day}T09:00:00+00:00" in html
    assert f"trigger:{trigger.pk}" in html
    listing = admin_client.get(reverse("admin:triggers_workflowtrigger_changelist")).content.decode()
    assert "Next run at" in listing


def test_change_page_of_a_paused_trigger_shows_why(admin_client, workflow):
    trigger = scheduled_trigger(workflow, "0 9 * * *")
    WorkflowTrigger.objects.filter(pk=trigger.pk).update(
        is_active=False, next_run_at=None, paused_reason="Paused after 3 consecutive failed runs")
    html = admin_client.get(reverse("admin:triggers_workflowtrigger_change", args=[trigger.pk])).content.decode()
    assert "Paused after 3 consecutive failed runs" in html
