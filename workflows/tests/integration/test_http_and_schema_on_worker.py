"""HTTP steps and output_schema on a real Celery worker (PostgreSQL + Redis).

The worker is started with the fake server's 127.0.0.1:port in
PROMPTPILOT_HTTP_ALLOWED_HOSTS, as an operator would allow an internal service.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from providers.tests.fakes import FakeServer, Reply
from workflows.models import HttpCredential
from workflows.tests.durability.helpers import calls_for, step_run, wait_finished
from workflows.tests.factories import make_workflow, probe_step
from workflows.tests.support.processes import ServiceProcess, start_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TOKEN = "crm-token-5b1e9c"
FAST_RETRIES = {"max_retries": 2, "backoff_base_seconds": 0.1, "backoff_max_seconds": 0.2, "jitter": False}


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def http_worker(service_env, tmp_path_factory, beat, api_server) -> Iterator[ServiceProcess]:
    allowed = httpx.URL(api_server.url).netloc.decode()
    process = start_worker("http", {**service_env, "PROMPTPILOT_HTTP_ALLOWED_HOSTS": allowed},
                           tmp_path_factory.mktemp("http-worker"))
    yield process
    process.stop()


def _execute(api, workflow, inputs=None) -> str:
    response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": inputs or {}}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_an_http_step_between_two_steps_calls_the_api_and_feeds_the_next_step(api, user, api_server, http_worker):
    credential = HttpCredential(name="crm", hosts=httpx.URL(api_server.url).netloc.decode())
    credential.set_headers({"Authorization": f"Bearer {TOKEN}"})
    credential.save()
    api_server.replies.clear()
    api_server.requests.clear()
    api_server.queue(Reply(200, {"customer": "c-17", "plan": "pro"}))
    workflow = make_workflow(user, variables=[{"name": "email", "type": "STRING", "required": True}], steps=[
        {"name": "normalise", "type": "TRANSFORM", "config": {"template": "{{ input.email | lower }}"}},
        {"name": "lookup", "type": "HTTP", "config": {
            "method": "POST", "url": api_server.url + "/customers/search", "credential": "crm",
            "headers": {"Content-Type": "application/json"},
            "body": '{"email": {{ steps.normalise.output | tojson }}}', "output_format": "json"}},
        {"name": "reply", "type": "TRANSFORM",
         "config": {"template": "{{ steps.lookup.output.body.customer }} is on {{ steps.lookup.output.body.plan }}"}},
    ])

    finished = wait_finished(_execute(api, workflow, {"email": "Ada@Example.COM"}), timeout=60)

    assert finished.status == "COMPLETED", finished.error
    assert finished.output == "c-17 is on pro"
    [seen] = api_server.requests
    assert seen.json == {"email": "ada@example.com"}
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    lookup = step_run(finished.id, "lookup")
    assert lookup.output["status"] == 200
    assert lookup.input["headers"]["Authorization"] == "<credential crm>"
    assert TOKEN not in str(lookup.input) + str(lookup.output)


def test_a_5xx_is_retried_on_the_worker_and_a_4xx_is_not(api, user, api_server, http_worker):
    api_server.replies.clear()
    api_server.requests.clear()
    api_server.queue(Reply(503, {"error": "busy"}), Reply(200, "ok now"), Reply(404, {"error": "gone"}))
    flaky = make_workflow(user, steps=[
        {"name": "call", "type": "HTTP", "config": {"url": api_server.url + "/flaky"}, "retry_config": FAST_RETRIES}])
    finished = wait_finished(_execute(api, flaky), timeout=60)
    assert finished.status == "COMPLETED", finished.error
    assert step_run(finished.id, "call").retry_count == 1

    missing = make_workflow(user, steps=[
        {"name": "call", "type": "HTTP", "config": {"url": api_server.url + "/gone"}, "retry_config": FAST_RETRIES}])
    failed = wait_finished(_execute(api, missing), timeout=60)
    assert failed.status == "FAILED"
    assert failed.error["type"] == "HttpStatusError" and failed.error["details"]["status_code"] == 404
    assert step_run(failed.id, "call").retry_count == 0
    assert [r.path for r in api_server.requests] == ["/flaky", "/flaky", "/gone"]


def test_a_schema_failure_is_retried_then_fails_naming_the_path(api, user, http_worker, probe_log):
    tag = uuid.uuid4().hex[:8]
    prompt = '{"tag": "' + tag + '", "items": [{"price": 1}, {"price": "free"}]}'  # the probe answers with its prompt
    step = probe_step("extract", prompt, retry_config={**FAST_RETRIES, "retry_on": ["transient", "invalid_output"]})
    step["config"]["output_schema"] = {"type": "object", "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"price": {"type": "number"}}}}}}
    workflow = make_workflow(user, steps=[step])

    failed = wait_finished(_execute(api, workflow), timeout=60)

    assert failed.status == "FAILED"
    assert failed.error["type"] == "InvalidOutput"
    assert failed.error["details"]["path"] == "$.items[1].price"
    assert step_run(failed.id, "extract").retry_count == 2
    assert len(calls_for(probe_log, prompt)) == 3  # the first attempt and two retries
