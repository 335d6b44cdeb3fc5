"""A run's events move the /metrics counters: executions, step durations, retries and the
model calls (latency, tokens, cost), read back as Prometheus text by the official parser.

In-process (this process's registry, no PROMETHEUS_MULTIPROC_DIR): the run's messages are
delivered by hand as a worker would (``broker_messages``); the model is OpenAI's SDK against
the fake server. The multiprocess mode with a real worker: integration/test_observability.py.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from providers.clients import clear_clients
from providers.models import ModelPrice
from providers.tests.fakes import FakeServer, Reply, openai_completion, openai_error
from workflows.models import StepExecutionStatus, WorkflowExecution, WorkflowStepExecution
from workflows.services import orchestration
from workflows.services.executions import execution_start
from workflows.services.reaper import reaper_sweep
from workflows.tests.factories import make_workflow
from workflows.tests.support.metrics import moved, scrape

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run, as in a worker


@pytest.fixture
def openai_server(settings):
    server = FakeServer()
    settings.PROMPTPILOT = {**settings.PROMPTPILOT,
                            "PROVIDERS": {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.url + "/v1"}}
    clear_clients()
    yield server
    server.close()
    clear_clients()


def _drive(sent) -> None:
    while sent:
        name, args = sent.pop(0)
        if name == "workflows.advance_execution":
            orchestration.execution_admit(execution_id=args[0])
        else:
            orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))


def test_a_run_with_a_retried_model_call_moves_every_counter(client, admin_user, user, broker_messages,
                                                            openai_server):
    ModelPrice.objects.create(provider="openai", model="gpt-x", input_per_million_usd=Decimal("2"),
                              output_per_million_usd=Decimal("10"))
    openai_server.queue(Reply(503, openai_error("overloaded")), Reply(200, openai_completion("Hi")))
    workflow = make_workflow(user, steps=[
        {"name": "ask", "type": "PROMPT", "retry_config": {"max_retries": 1, "backoff_max_seconds": 1},
         "config": {"template": "Say hi", "model": {"provider": "openai", "model": "gpt-x"}}},
        {"name": "shape", "type": "TRANSFORM", "config": {"template": "[{{ steps.ask.output }}]"}},
    ])
    client.force_login(admin_user)
    sent = broker_messages(0)
    before = scrape(client)

    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    _drive(sent)

    execution = WorkflowExecution.objects.get(pk=execution.pk)
    assert execution.status == "COMPLETED", execution.error
    after = scrape(client)
    assert moved(before, after, "promptpilot_executions_created_total", trigger_type="MANUAL") == 1
    assert moved(before, after, "promptpilot_executions_finished_total", status="COMPLETED") == 1
    assert moved(before, after, "promptpilot_step_retries_total", reason="ProviderUnavailable") == 1
    # Two PROMPT attempts (the failed one and its retry) and one TRANSFORM, each timed.
    assert moved(before, after, "promptpilot_step_duration_seconds_count", step_type="PROMPT") == 2
    assert moved(before, after, "promptpilot_step_duration_seconds_bucket", step_type="PROMPT", le="+Inf") == 2
    assert moved(before, after, "promptpilot_step_duration_seconds_count", step_type="TRANSFORM") == 1
    assert moved(before, after, "promptpilot_step_attempts_total", step_type="PROMPT", outcome="completed") == 1
    assert moved(before, after, "promptpilot_provider_calls_total", provider="openai", model="gpt-x",
                 status="error") == 1
    assert moved(before, after, "promptpilot_provider_calls_total", provider="openai", model="gpt-x",
                 status="ok") == 1
    assert moved(before, after, "promptpilot_provider_latency_seconds_count", provider="openai", model="gpt-x") == 2
    # The fake server's usage: 11 prompt and 4 completion tokens, priced at 2 and 10 USD per million.
    assert moved(before, after, "promptpilot_provider_tokens_total", provider="openai", model="gpt-x",
                 kind="input") == 11
    assert moved(before, after, "promptpilot_provider_tokens_total", provider="openai", model="gpt-x",
                 kind="output") == 4
    assert moved(before, after, "promptpilot_provider_cost_usd_total", provider="openai",
                 model="gpt-x") == pytest.approx((11 * 2 + 4 * 10) / 1e6)
    assert after[("promptpilot_executions", (("status", "COMPLETED"), ("trigger_type", "MANUAL")))] == 1


def test_the_reaper_counts_and_logs_what_it_recovers(client, admin_user, user, broker_messages, settings, caplog):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "MAX_LOST_ATTEMPTS": 2}
    workflow = make_workflow(user, steps=[{"name": "t", "type": "TRANSFORM", "config": {"template": "x"}}])
    client.force_login(admin_user)
    sent = broker_messages(0)
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    orchestration.execution_admit(execution_id=sent.pop(0)[1][0], go_on_here=False)
    step = WorkflowStepExecution.objects.get(execution=execution)

    def lose_the_worker():  # the attempt was claimed by a worker that vanished
        WorkflowStepExecution.objects.filter(pk=step.pk).update(
            status=StepExecutionStatus.RUNNING, worker="gone:1", lease_expires_at=timezone.now() - timedelta(seconds=1))

    before = scrape(client)
    with caplog.at_level(logging.INFO):
        lose_the_worker()
        reaper_sweep()  # lost once: sent again
        lose_the_worker()
        reaper_sweep()  # lost twice: the step and its run fail as WorkerLost
    after = scrape(client)

    assert WorkflowExecution.objects.get(pk=execution.pk).status == "FAILED"
    assert moved(before, after, "promptpilot_reaper_recoveries_total", action="expired_leases") == 2
    assert moved(before, after, "promptpilot_reaper_recoveries_total", action="workers_lost") == 1
    assert moved(before, after, "promptpilot_step_retries_total", reason="WorkerLost") == 1
    assert moved(before, after, "promptpilot_executions_finished_total", status="FAILED") == 1
    events = [(r.getMessage(), getattr(r, "execution_id", None)) for r in caplog.records
              if r.getMessage() in ("step.retrying", "step.failed", "execution.failed", "reaper.recovered")]
    ours = str(execution.pk)
    assert events == [("step.retrying", ours), ("reaper.recovered", None), ("step.failed", ours),
                      ("execution.failed", ours), ("reaper.recovered", None)]
    [failed] = [r for r in caplog.records if r.getMessage() == "execution.failed"]
    assert failed.error_type == "WorkerLost"


@pytest.mark.single_pass
def test_a_cancel_through_the_api_is_counted_and_logged_with_the_request_id(api, client, admin_user, user,
                                                                            broker_messages, caplog):
    workflow = make_workflow(user, steps=[{"name": "t", "type": "TRANSFORM", "config": {"template": "x"}}])
    broker_messages(0)  # nobody starts it: it is cancelled while PENDING
    client.force_login(admin_user)
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    before = scrape(client)
    with caplog.at_level(logging.INFO):
        response = api.post(f"/api/executions/{execution.pk}/cancel", HTTP_X_REQUEST_ID="cancel-1")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    assert moved(before, scrape(client), "promptpilot_executions_finished_total", status="CANCELLED") == 1
    [cancelled] = [r for r in caplog.records if r.getMessage() == "execution.cancelled"]
    assert (cancelled.execution_id, cancelled.request_id, cancelled.error_type) == (str(execution.pk), "cancel-1",
                                                                                    "Cancelled")
