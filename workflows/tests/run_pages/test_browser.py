"""The execution page in a real browser, with a real Celery worker running the steps:
Debian's chromium (playwright) against pytest-django's live server, and the shared
worker against the same test database and broker. A missing chromium, PostgreSQL or
Redis FAILS these tests.

Start a run from /workflows/{id}/run and watch its page go RUNNING → COMPLETED without a
reload (htmx polling, which stops once the run has ended); cancel a slow run from its page.
Waits are generous: the worker shares two cores with other suites.
"""
from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from workflows.models import WorkflowExecution
from workflows.tests.durability.helpers import calls_for, step_run, wait_for
from workflows.tests.factories import make_workflow, probe_step

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LIVE_PATH = re.compile(r"/executions/[0-9a-f-]+/live$")
EXECUTION_URL = re.compile(r"/executions/([0-9a-f-]{36})/$")
SLOW = 60_000  # ms: long enough for any wait below on a loaded machine


def _start_run(tab, workflow) -> WorkflowExecution:
    tab.goto(f"/workflows/{workflow.pk}/run")
    tab.click("button:has-text('Start run')")
    tab.wait_for_url(EXECUTION_URL)
    return WorkflowExecution.objects.get(pk=EXECUTION_URL.search(tab.url).group(1))


def _run_badge(tab):
    return tab.locator("#execution-live .page-head h1 .badge")


def test_execution_page_goes_from_running_to_completed_without_reloading(tab, builder, shared_worker):
    workflow = make_workflow(builder, name="Slow digest", steps=[
        {"name": "draft", "type": "PROMPT",
         "config": {"template": "Draft about tides", "model": {"provider": "echo", "model": "echo", "delay_ms": 4000}}},
        {"name": "final", "type": "TRANSFORM", "config": {"template": "Final: {{ steps.draft.output }}"}},
    ])
    live_answers: list[int] = []
    tab.on("response", lambda r: LIVE_PATH.search(r.url) and live_answers.append(r.status))

    execution = _start_run(tab, workflow)
    # A marker on the window: a reload or a navigation would drop it.
    tab.evaluate("window.__samePage = true")

    expect(_run_badge(tab)).to_have_text("RUNNING", timeout=SLOW)
    draft_row = tab.locator("[data-testid=timeline] .tl-row[data-step=draft]")
    expect(draft_row.locator(".badge")).to_have_text("RUNNING")
    expect(tab.locator("[data-testid=live]")).to_be_visible()

    expect(_run_badge(tab)).to_have_text("COMPLETED", timeout=SLOW)
    assert tab.evaluate("window.__samePage === true"), "the page updated in place, without a reload"
    assert tab.url.endswith(f"/executions/{execution.pk}/")
    # The live region now shows the finished run: both steps, the output, no "live" mark.
    expect(draft_row.locator(".badge")).to_have_text("COMPLETED")
    expect(tab.locator("[data-testid=timeline] .tl-row[data-step=final] .badge")).to_have_text("COMPLETED")
    expect(tab.locator("[data-testid=output]")).to_contain_text("Final: Draft about tides")
    expect(tab.locator("[data-testid=live]")).to_have_count(0)
    expect(tab.locator("[data-testid=cancel-form]")).to_have_count(0)

    # htmx polled while the run was unfinished and stopped at the 286 ("finished") answer.
    assert live_answers.count(200) >= 1, f"the page polled while running: {live_answers}"
    assert live_answers[-1] == 286, f"the last poll answered 'stop polling': {live_answers}"
    polls = len(live_answers)
    tab.wait_for_timeout(3_500)  # more than three poll intervals
    assert len(live_answers) == polls, f"no poll after the run ended: {live_answers}"
    assert WorkflowExecution.objects.get(pk=execution.pk).status == "COMPLETED"


def test_cancel_a_slow_run_from_its_page(tab, builder, shared_worker, probe_log):
    tag = uuid.uuid4().hex[:8]
    workflow = make_workflow(builder, name="Very slow", steps=[
        probe_step("wait", f"slow {tag}", delay_ms=6000),
        probe_step("after", f"after {tag}"),
    ])
    execution = _start_run(tab, workflow)
    expect(tab.locator("[data-testid=timeline] .tl-row[data-step=wait] .badge")).to_have_text("RUNNING", timeout=SLOW)

    tab.click("button:has-text('Cancel run')")
    tab.wait_for_url(re.compile(rf"/executions/{execution.pk}/$"))
    expect(tab.locator(".messages")).to_contain_text("Execution cancelled")
    expect(_run_badge(tab)).to_have_text("CANCELLED")
    expect(tab.locator("[data-testid=timeline] .tl-row[data-step=wait] .badge")).to_have_text("CANCELLED")
    expect(tab.locator("[data-testid=execution-error]")).to_contain_text("Cancelled by builder")
    expect(tab.locator("[data-testid=cancel-form]")).to_have_count(0)
    expect(tab.locator("[data-testid=retry-form]")).to_be_visible()

    # The model call still in flight ends on the worker; its checkpoint is refused.
    wait_for(lambda: calls_for(probe_log, f"slow {tag}", "done"), 60, "the slow call to end on the worker")
    wait_for(lambda: any("discarded" in str(w) for w in step_run(execution.pk, "wait").warnings), 60,
             "the worker to discard the late result")
    assert step_run(execution.pk, "wait").status == "CANCELLED"
    assert WorkflowExecution.objects.get(pk=execution.pk).status == "CANCELLED"
    assert calls_for(probe_log, f"after {tag}") == [], "no step starts after a cancel"
    tab.reload()
    expect(_run_badge(tab)).to_have_text("CANCELLED")
    expect(tab.locator("[data-testid=timeline] .tl-row[data-step=wait] .badge")).to_have_text("CANCELLED")
    expect(tab.locator("details.step-card[data-step=wait]")).to_contain_text("Late result of attempt 1")
