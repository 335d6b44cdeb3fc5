"""/attention/ in a real browser (Debian's chromium, playwright, the live server): the
nav shows the count, Dismiss posts with the CSRF token and the item leaves the list.
A missing chromium or PostgreSQL FAILS this test."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from triggers.models import TriggerInvocation
from workflows.tests.run_pages.helpers import echo_workflow

from .helpers import rejected_invocation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_dismissing_a_rejected_delivery_from_the_page(tab, builder):
    invocation = rejected_invocation(echo_workflow(builder, name="Inbound orders"), name="Orders hook")
    tab.goto("/workflows/")
    nav = tab.locator("[data-testid=nav-attention]")
    expect(nav).to_have_text("Needs attention 1")
    nav.click()
    row = tab.locator(f"[data-attention='{invocation.pk}']")
    expect(row).to_contain_text("Rejected by a trigger")
    expect(row).to_contain_text("Trigger Orders hook")
    row.locator("button:has-text('Dismiss')").click()
    expect(tab.locator(".flash-success")).to_have_text("Dismissed: it no longer needs attention.")
    expect(tab.locator("[data-testid=attention-empty]")).to_be_visible()
    expect(nav).to_have_text("Needs attention")
    dismissed = TriggerInvocation.objects.get(pk=invocation.pk)
    assert dismissed.attention_dismissed_by_id == builder.pk
