"""The trigger pages in a real browser: Debian's chromium driven by playwright against
pytest-django's live server. A missing chromium FAILS these tests (it never skips them);
CI installs it with ``apt-get install chromium``.

One browser per module; each test gets a fresh context (cookies) and logs in through
/accounts/login/ like a person would.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from triggers.models import WorkflowTrigger
from triggers.services.webhooks import webhook_signature
from triggers.tests.helpers import create_trigger, customer_workflow
from workflows.models import WorkflowExecution
from workflows.tests.support.browser import PASSWORD  # the `browser` fixture comes with it (conftest.py)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT = Path(os.environ.get("PROMPTPILOT_SCREENSHOT_DIR", "/tmp")) / "promptpilot-trigger-detail.png"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch) -> list:
    """Runs stay PENDING: the pages are under test, not the workers (the live server runs in
    this process, so the patch reaches it)."""
    sent: list = []
    monkeypatch.setattr("workflows.services.dispatch._send", lambda task, args, **kw: sent.append((task, args)))
    return sent


@pytest.fixture
def builder(django_user_model):
    # A plain builder, not staff: the pages' own login (settings.LOGIN_URL) admits any user.
    return django_user_model.objects.create_user(username="builder", password=PASSWORD)


@pytest.fixture
def flow(builder):
    return customer_workflow(builder, name="Customer greeting")


@pytest.fixture
def tab(browser, live_server, builder) -> Iterator:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(10_000)
    tab = context.new_page()
    tab.goto("/triggers/")
    assert "/accounts/login/" in tab.url, "an anonymous visit is sent to the login page"
    tab.fill("#id_username", builder.username)
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit], button[type=submit]")
    tab.wait_for_url(re.compile(r"/triggers/$"))
    yield tab
    context.close()


def _post_signed(url: str, secret: str, payload: dict) -> int:
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "webhook-id": "msg_browser_1", "webhook-timestamp": timestamp,
               "webhook-signature": webhook_signature(secret=secret, msg_id="msg_browser_1", timestamp=timestamp,
                                                      body=body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_create_a_webhook_trigger_see_the_secret_once_and_use_it(tab, live_server, flow):
    tab.click("text=New trigger")
    tab.select_option("#id_workflow", str(flow.pk))
    tab.select_option("#id_type", "WEBHOOK")
    tab.fill("#id_name", "Orders from the shop")
    tab.click("button:has-text('Create trigger')")

    tab.wait_for_url(re.compile(r"/triggers/[0-9a-f-]{36}/secret$"))
    secret = tab.text_content("[data-testid=secret-value]").strip()
    assert secret.startswith("whsec_")
    assert "you will not see this again" in tab.text_content("[data-testid=one-time-secret]")
    tab.click("[data-testid=one-time-secret] button:has-text('Copy')")
    expect(tab.locator("[data-testid=one-time-secret] button")).to_have_text("Copied")
    assert tab.evaluate("navigator.clipboard.readText()") == secret

    tab.reload()
    expect(tab.locator("h1")).to_have_text("Secret not available")
    assert tab.locator("[data-testid=secret-value]").count() == 0
    assert secret not in tab.content()
    assert "shown once" in tab.text_content("[data-testid=secret-gone]")

    trigger = WorkflowTrigger.objects.get()
    tab.click("text=Go to the trigger")
    tab.wait_for_url(re.compile(rf"/triggers/{trigger.pk}/$"))
    webhook_url = tab.text_content("[data-testid=webhook-url]").strip()
    assert webhook_url == f"{live_server.url}/api/webhooks/{trigger.pk}"
    assert tab.text_content("[data-metric=executions_total]").strip() == "0"

    # The secret from the page signs a delivery that the live server accepts.
    assert _post_signed(webhook_url, secret, {"customer": "Ada"}) == 202
    tab.reload()
    assert tab.text_content("[data-metric=executions_total]").strip() == "1"
    invocations = tab.locator("[data-testid=invocations] tbody tr")
    assert invocations.count() == 1 and "ACCEPTED" in invocations.first.text_content()
    assert "PENDING" in tab.text_content("[data-testid=executions]")
    assert secret not in tab.content()

    tab.screenshot(path=str(SCREENSHOT), full_page=True)


def test_execute_a_manual_trigger_and_see_the_execution_id(tab, flow):
    trigger, _ = create_trigger(flow, "MANUAL", name="Run it now")
    tab.goto(f"/triggers/{trigger.pk}/")
    assert tab.evaluate("typeof window.htmx") == "object", "the vendored htmx loaded"
    tab.fill("#id_input", '{"customer": "Grace"}')
    tab.click("button:has-text('Execute now')")

    result = tab.locator("[data-testid=execute-result]")
    expect(result).to_contain_text("started")
    execution = WorkflowExecution.objects.get()
    assert str(execution.pk) in result.text_content() and "PENDING" in result.text_content()
    assert execution.trigger_id == trigger.pk and execution.input["customer"] == "Grace"
    assert tab.url.endswith(f"/triggers/{trigger.pk}/"), "htmx answered in place"
    expect(tab.locator("[data-metric=executions_total]")).to_have_text("1")  # swapped in out of band
    expect(tab.locator("[data-testid=executions]")).to_contain_text("PENDING")

    tab.reload()
    assert str(execution.pk)[:10] in tab.text_content("[data-testid=executions]")


def test_invalid_input_is_explained_in_the_page(tab, flow):
    trigger, _ = create_trigger(flow, "MANUAL", name="Strict")
    tab.goto(f"/triggers/{trigger.pk}/")
    tab.fill("#id_input", '{"customer": 42}')
    tab.click("button:has-text('Execute now')")
    expect(tab.locator("#execute-panel .flash-error")).to_contain_text("The input is invalid")
    assert not WorkflowExecution.objects.exists()


def test_disable_and_enable_change_the_badge(tab, flow):
    trigger, _ = create_trigger(flow, "MANUAL", name="Toggle me")
    tab.goto(f"/triggers/{trigger.pk}/")
    badge = tab.locator("h1 [data-testid=active-badge]")
    expect(badge).to_have_text("Active")

    tab.click("button:has-text('Disable')")
    expect(badge).to_have_text("Disabled")
    expect(tab.locator(".messages")).to_contain_text("disabled")
    expect(tab.locator("button:has-text('Execute now')")).to_be_disabled()
    trigger.refresh_from_db()
    assert not trigger.is_active

    tab.click("button:has-text('Enable')")
    expect(badge).to_have_text("Active")
    trigger.refresh_from_db()
    assert trigger.is_active
