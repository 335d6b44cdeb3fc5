"""/triggers/<id>/: settings, webhook URL / API key prefix, metrics, recent invocations and executions."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.services.firing import trigger_fire
from triggers.tests.helpers import body_bytes, create_trigger, deliver, signed_headers
from workflows.models import ExecutionStatus

from .helpers import text

pytestmark = pytest.mark.django_db


def _finish(execution, status, ms):
    now = timezone.now()
    execution.status = status
    execution.started_at = now - timedelta(milliseconds=ms)
    execution.completed_at = now
    execution.error = {"type": "StepFailed", "message": "the model said no"} if status == "FAILED" else None
    execution.save()


def test_webhook_detail_shows_url_signing_hint_and_no_secret(page, webhook):
    trigger, secret = webhook
    response = page.get(f"/triggers/{trigger.pk}/")
    assert response.status_code == 200
    body = text(response)
    assert f"http://testserver/api/webhooks/{trigger.pk}" in body
    assert "webhook-signature" in body and "webhook-timestamp" in body and "Standard Webhooks" in body
    assert secret not in body and secret[6:] not in body and trigger.secret_encrypted not in body
    assert "Rotate secret" in body
    assert "Execute now" not in body, "webhooks fire by signed POSTs, not by the button"


def test_api_detail_shows_the_key_prefix_only(page, api_trigger):
    trigger, key = api_trigger
    body = text(page.get(f"/triggers/{trigger.pk}/"))
    assert trigger.api_key_prefix in body and key not in body and trigger.api_key_hash not in body
    assert "X-API-Key" in body and "Execute now" in body and "Rotate key" in body


def test_config_is_pretty_json(page, workflow):
    trigger, _ = create_trigger(workflow, "WEBHOOK", config={"input_mapping": {"customer": "payload.name"}})
    body = text(page.get(f"/triggers/{trigger.pk}/"))
    assert "{\n  &quot;input_mapping&quot;: {\n    &quot;customer&quot;: &quot;payload.name&quot;" in body


def test_metrics_come_from_the_metrics_service(page, manual):
    runs = [trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}).execution for _ in range(4)]
    _finish(runs[0], ExecutionStatus.COMPLETED, 100)
    _finish(runs[1], ExecutionStatus.COMPLETED, 300)
    _finish(runs[2], ExecutionStatus.FAILED, 200)
    response = page.get(f"/triggers/{manual.pk}/")
    metrics = response.context["metrics"]
    assert metrics["executions_total"] == 4
    assert metrics["by_status"]["COMPLETED"] == 2 and metrics["by_status"]["PENDING"] == 1
    body = text(response)
    assert 'data-metric="executions_total">4<' in body
    assert "66.7&nbsp;%" in body, "2 COMPLETED of 3 finished"
    assert 'data-metric="avg_duration_ms">200&nbsp;ms<' in body
    assert "the model said no" in body
    for status in ("COMPLETED", "FAILED", "PENDING"):
        assert f'badge-{status.lower()}' in body


def test_recent_invocations_show_verification_and_execution(page, webhook, client):
    trigger, secret = webhook
    payload = body_bytes({"customer": "Ada"})
    assert deliver(client, trigger.pk, payload, signed_headers(secret, payload)).status_code == 202
    assert deliver(client, trigger.pk, payload, signed_headers("whsec_" + "A" * 44, payload)).status_code == 401
    response = page.get(f"/triggers/{trigger.pk}/")
    invocations = response.context["invocations"]
    assert [i.status for i in invocations] == [InvocationStatus.REJECTED, InvocationStatus.ACCEPTED]
    body = text(response)
    assert "No signature in webhook-signature matches" in body
    accepted = TriggerInvocation.objects.get(status=InvocationStatus.ACCEPTED)
    assert f'href="/executions/{accepted.execution_id}/"' in body, "the run's page, not the API"
    assert "/api/executions/" not in body
    assert "✓ yes" in body and "✗ no" in body


def test_recent_lists_are_capped_at_ten_and_cheap(page, manual, django_assert_max_num_queries):
    for _ in range(12):
        trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={})
    with django_assert_max_num_queries(14):
        response = page.get(f"/triggers/{manual.pk}/")
    assert len(response.context["invocations"]) == 10 and len(response.context["executions"]) == 10


def test_unfinished_runs_make_the_activity_poll_and_the_partial_renders(page, manual):
    trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={})
    body = text(page.get(f"/triggers/{manual.pk}/"))
    assert f'hx-get="/triggers/{manual.pk}/activity"' in body
    partial = page.get(f"/triggers/{manual.pk}/activity")
    assert partial.status_code == 200
    assert 'id="trigger-activity"' in text(partial) and "<html" not in text(partial)


def test_no_polling_when_every_run_finished(page, manual):
    execution = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}).execution
    _finish(execution, ExecutionStatus.COMPLETED, 5)
    assert "hx-trigger=\"every" not in text(page.get(f"/triggers/{manual.pk}/"))


SCHEDULE = {"cron": "30 9 * * *", "timezone": "Europe/Paris", "input": {"customer": "Ada"}}


def test_a_schedule_shows_its_next_runs_as_the_api_does(page, workflow, api):
    from triggers.services.schedules import schedule_next_runs

    trigger, _ = create_trigger(workflow, "SCHEDULED", config=SCHEDULE)
    trigger.refresh_from_db()
    response = page.get(f"/triggers/{trigger.pk}/")
    body = text(response)
    assert 'data-testid="schedule"' in body and "Europe/Paris" in body and "30 9 * * *" in body
    expected = schedule_next_runs(trigger=trigger)
    assert len(expected) == 5 and body.count("<li><time") == 5
    assert [run["utc"] for run in response.context["next_runs"]] == [
        timezone.datetime.fromisoformat(run["utc"].replace("Z", "+00:00")) for run in expected
    ]
    assert body.count(" 09:30</time>") == 5, "local times in the trigger's time zone"
    assert trigger.next_run_at.strftime("%Y-%m-%d %H:%M") in body
    assert api.get(f"/api/triggers/{trigger.pk}/").json()["next_runs"] == expected
    assert "Execute now" not in body


def test_a_disabled_schedule_says_nothing_runs_and_a_paused_one_says_why(page, workflow):
    trigger, _ = create_trigger(workflow, "SCHEDULED", config=SCHEDULE, is_active=False)
    body = text(page.get(f"/triggers/{trigger.pk}/"))
    assert "no run is scheduled" in body and "<li><time" not in body
    type(trigger).objects.filter(pk=trigger.pk).update(paused_at=timezone.now(), paused_reason="3 failed runs in a row")
    body = text(page.get(f"/triggers/{trigger.pk}/"))
    assert 'data-testid="paused"' in body and "3 failed runs in a row" in body


def test_the_base_layout_has_the_nav_and_no_external_assets(page, manual):
    body = text(page.get(f"/triggers/{manual.pk}/"))
    for link in ('href="/triggers/"', 'href="/api/docs"', 'action="/accounts/logout/"'):
        assert link in body
    assert "/static/js/htmx.min.js" in body and "/static/css/app.css" in body
    assert "https://" not in body and "http://cdn" not in body
