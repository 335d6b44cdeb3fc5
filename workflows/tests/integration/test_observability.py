"""What operators read from a real worker: JSON log lines with the run's ids and without
its secrets or prompts, and counters added up across processes in multiprocess mode.

One prefork worker (two pool children) runs with nothing configured about logs (no ``-l``,
no PROMPTPILOT_LOG_LEVEL or _FORMAT: it prints its default, JSON lines at INFO, from the pool
children too), with PROMETHEUS_MULTIPROC_DIR set to a temporary folder, and
with an OpenAI key whose calls go to the fake server (the real SDK over HTTP).
"""
from __future__ import annotations

import io
import json
import logging
import logging.config
import os

import pytest
from django.test import override_settings

from promptpilot.common.logs import CELERY_TASK_LOGGERS, ContextFilter, logging_config
from providers.tests.fakes import FakeServer, Reply, openai_completion
from workflows.tests.durability.helpers import wait_finished, wait_for
from workflows.tests.factories import make_workflow
from workflows.tests.support.metrics import moved, scrape
from workflows.tests.support.processes import start_beat, start_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

API_KEY = "sk-live-QuokkaKey-9f3b2c1d0e7a"
CUSTOMER = "Zanzibar-Quokka-7731"
PROMPT = f"Summarise the open contract of {CUSTOMER} in one line"


@pytest.fixture(scope="module")
def openai_server():
    server = FakeServer(default=lambda request: Reply(200, openai_completion("Contract summary ready.")))
    yield server
    server.close()


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("prometheus-multiproc")


@pytest.fixture(scope="module")
def observed_worker(service_env, tmp_path_factory, openai_server, metrics_dir):
    env = {k: v for k, v in service_env.items() if k not in ("PROMPTPILOT_LOG_FORMAT", "DJANGO_DEBUG")}
    env.update({"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": openai_server.url + "/v1",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                # Celery reads "--pool prefork" as "the configured pool" (threads): say it here.
                "PROMPTPILOT_WORKER_POOL": "prefork", "PROMPTPILOT_WORKER_CONCURRENCY": "2"})
    env.pop("PROMPTPILOT_LOG_LEVEL", None)
    process = start_worker("observed", env, tmp_path_factory.mktemp("observed-worker"), level=None)
    assert "concurrency: 2 (prefork)" in process.log()
    yield process
    process.stop()


def _contract_workflow(user):
    return make_workflow(user, variables=[{"name": "customer", "type": "STRING", "required": True}], steps=[
        {"name": "summarise", "type": "PROMPT",
         "config": {"template": "Summarise the open contract of {{ input.customer }} in one line",
                    "model": {"provider": "openai", "model": "gpt-x"}}},
        {"name": "shape", "type": "TRANSFORM", "config": {"template": "[{{ steps.summarise.output }}]"}},
    ])


def _execute(api, workflow, **headers) -> str:
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {"customer": CUSTOMER}}, format="json",
                        **headers)
    assert response.status_code == 202, response.content
    return response.json()["id"]


class _JsonCapture:
    """This (web) process's log lines, formatted as settings.LOGGING formats them by default."""

    def __enter__(self) -> io.StringIO:
        config = logging_config(log_format="json", level="INFO")
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.config.DictConfigurator(config).configure_formatter(
            config["formatters"]["json"]))
        self.handler.addFilter(ContextFilter())
        logging.getLogger().addHandler(self.handler)
        return self.stream

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self.handler)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_runs_log_lines_are_json_with_its_ids_and_without_its_key_or_prompt(api, user, observed_worker,
                                                                              openai_server):
    workflow = _contract_workflow(user)
    with _JsonCapture() as web_log:
        execution_id = _execute(api, workflow, HTTP_X_REQUEST_ID="req-observe-1")
    finished = wait_finished(execution_id, timeout=90)
    assert finished.status == "COMPLETED", finished.error

    # The key and the prompt did reach the provider...
    [call] = [r for r in openai_server.requests if CUSTOMER in r.raw_body.decode()]
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert PROMPT in call.json["messages"][-1]["content"]
    # ...and appear in no log line, the worker's or the web's.
    wait_for(lambda: f'"execution_id": "{execution_id}"' in observed_worker.log(), 30, "the worker's lines")
    worker_lines = _json_lines(observed_worker.log())
    for text in (observed_worker.log(), web_log.getvalue()):
        assert API_KEY not in text
        assert CUSTOMER not in text and PROMPT not in text

    mine = [r for r in worker_lines if r.get("execution_id") == execution_id]
    events = {r["message"]: r for r in mine}
    assert {"execution.started", "step.started", "step.completed", "execution.completed"} <= set(events), events
    for record in mine:
        if record["message"].startswith("step."):
            assert record["workflow_id"] == workflow.pk and record["attempt"] == 1
            assert record["step"] in ("summarise", "shape")
    assert events["execution.completed"]["status"] == "COMPLETED"
    # Celery's own "Task … received" / "Task … succeeded in …" lines would say it again, without the ids.
    assert not [r for r in worker_lines if r["logger"] in CELERY_TASK_LOGGERS], "Celery's per-task lines are off"
    assert all(r["level"] in ("INFO", "WARNING", "ERROR") and "time" in r and "logger" in r for r in worker_lines)

    [created] = [r for r in _json_lines(web_log.getvalue()) if r["message"] == "execution.created"]
    assert (created["execution_id"], created["workflow_id"], created["request_id"]) == (
        execution_id, workflow.pk, "req-observe-1")


def test_metrics_add_up_the_worker_processes_files(client, admin_user, api, user, observed_worker, metrics_dir):
    workflow = _contract_workflow(user)
    client.force_login(admin_user)
    with override_settings(PROMPTPILOT={**_promptpilot(), "METRICS_MULTIPROC_DIR": str(metrics_dir)}):
        before = scrape(client)
        runs = [_execute(api, workflow) for _ in range(2)]
        assert [wait_finished(run, timeout=90).status for run in runs] == ["COMPLETED", "COMPLETED"]
        after = scrape(client)

    assert moved(before, after, "promptpilot_executions_finished_total", status="COMPLETED") == 2
    assert moved(before, after, "promptpilot_step_duration_seconds_count", step_type="PROMPT") == 2
    assert moved(before, after, "promptpilot_step_duration_seconds_count", step_type="TRANSFORM") == 2
    assert moved(before, after, "promptpilot_step_duration_seconds_bucket", step_type="PROMPT", le="+Inf") == 2
    assert moved(before, after, "promptpilot_provider_calls_total", provider="openai", model="gpt-x",
                 status="ok") == 2
    assert moved(before, after, "promptpilot_provider_latency_seconds_count", provider="openai", model="gpt-x") == 2
    assert moved(before, after, "promptpilot_provider_tokens_total", provider="openai", model="gpt-x",
                 kind="input") == 22
    # The worker's pool children wrote them (files named by host and pid), not this process.
    written = sorted(path.name for path in metrics_dir.glob("*.db"))
    assert written and not any(name.endswith(f"-{os.getpid()}.db") for name in written), written


def _promptpilot() -> dict:
    from django.conf import settings

    return settings.PROMPTPILOT


def test_beat_prints_json_lines_too(service_env, tmp_path):
    env = {k: v for k, v in service_env.items() if k not in ("PROMPTPILOT_LOG_FORMAT", "DJANGO_DEBUG")}
    beat = start_beat(env, tmp_path)
    try:
        wait_for(lambda: "Sending due task" in beat.log(), 30, "beat to send a task")
    finally:
        beat.stop()
    records = _json_lines(beat.log())
    assert any(r["logger"] == "celery.beat" and r["message"].startswith("beat: Starting") for r in records)
    assert any(r["message"].startswith("Scheduler: Sending due task") for r in records)
