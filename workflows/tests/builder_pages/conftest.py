"""Fixtures of the builder's workflow page tests (list, detail, editor, preview, run)."""
from __future__ import annotations

import pytest
from django.test import Client

from workflows.tests.factories import make_workflow
from workflows.tests.support.browser import browser, builder, tab  # noqa: F401  (browser tests)

ECHO = {"provider": "echo", "model": "echo"}


@pytest.fixture
def page(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def other_page(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def staff_page(django_user_model) -> Client:
    staff = django_user_model.objects.create_user(username="staffer", password="pw-staff-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def flow(user):
    """Two steps: a PROMPT on echo, then a TRANSFORM that reads it."""
    return make_workflow(
        user, name="Summarise ticket", description="Summaries for support tickets",
        variables=[
            {"name": "ticket", "type": "STRING", "required": True, "sample": "Printer on fire"},
            {"name": "tone", "type": "STRING", "required": False, "default": "calm"},
        ],
        steps=[
            {"name": "draft", "type": "PROMPT",
             "config": {"template": "Summarise {{ input.ticket }} in a {{ input.tone }} tone.", "model": ECHO}},
            {"name": "final", "type": "TRANSFORM", "config": {"template": "Summary: {{ steps.draft.output }}"}},
        ],
    )
