"""Preview options (DESIGN §6, issue 10 item 1): placeholders, dry runs, until and
steps_output, from_execution, cost estimates; and that nothing is ever persisted."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
from django.conf import settings

from providers.clients import clear_clients
from providers.models import ModelPrice
from providers.tests.fakes import FakeServer, Reply
from triggers.models import TriggerInvocation
from workflows.models import WorkflowExecution, WorkflowStepExecution

pytestmark = pytest.mark.django_db

OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "real answer"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}


@pytest.fixture
def fake_openai(settings) -> Iterator[FakeServer]:
    server = FakeServer(default=lambda request: Reply(200, OPENAI_ANSWER))
    settings.PROMPTPILOT = {**settings.PROMPTPILOT,
                            "PROVIDERS": {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.url + "/v1"}}
    clear_clients()
    yield server
    server.close()
    clear_clients()


def _preview(api, workflow_id, body):
    return api.post(f"/api/workflows/{workflow_id}/preview", body, format="json")


def _queue_lengths() -> dict[bytes, int]:
    """Every list in the broker's Redis database (Celery queues are lists)."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return {key: client.llen(key) for key in client.scan_iter() if client.type(key) == b"list"}


def _counts() -> tuple[int, int, int]:
    return (WorkflowExecution.objects.count(), WorkflowStepExecution.objects.count(),
            TriggerInvocation.objects.count())


def _openai_workflow(create_workflow, **config):
    return create_workflow(steps=[
        {"name": "greet", "order": 1, "type": "TRANSFORM", "config": {"template": "Hello {{ input.name }}"}},
        {"name": "ask", "order": 2, "type": "PROMPT", "config": {
            "template": "Answer briefly, {{ steps.greet.output }}: what is a prompt workflow?",
            "model": {"provider": "openai", "model": "gpt-4o-mini", **config}}},
    ])


# --- placeholders -----------------------------------------------------------------


def test_sample_data_fills_variables_without_sample_or_default_with_typed_placeholders(api, create_workflow):
    created = create_workflow(variables=[
        {"name": "name", "type": "STRING"}, {"name": "count", "type": "NUMBER"},
        {"name": "loud", "type": "BOOLEAN"}, {"name": "extra", "type": "JSON"},
        {"name": "known", "type": "STRING", "sample": "yes"},
    ], steps=[{"name": "show", "order": 1, "type": "TRANSFORM", "config": {
        "template": "{{ input.name }}|{{ input.count }}|{{ input.loud }}|{{ input.extra }}|{{ input.known }}"}}])
    body = _preview(api, created["id"], {"use_sample_data": True}).json()
    assert body["status"] == "COMPLETED", body
    assert body["output"] == "<name>|0|False|{}|yes"
    named = [w for w in body["warnings"] if "no sample nor default" in w]
    assert len(named) == 4 and all(f'"{v}"' in " ".join(named) for v in ("name", "count", "loud", "extra"))


def test_without_sample_data_a_missing_required_variable_is_still_400(api, create_workflow):
    created = create_workflow(variables=[{"name": "name", "type": "STRING"}],
                              steps=[{"name": "s", "order": 1, "type": "TRANSFORM", "config": {"template": "x"}}])
    response = _preview(api, created["id"], {})
    assert response.status_code == 400 and response.json()["code"] == "invalid_input"


# --- dry run ----------------------------------------------------------------------


def test_dry_run_calls_no_provider_and_estimates_tokens_from_the_prompt(api, create_workflow, fake_openai):
    created = _openai_workflow(create_workflow, max_tokens=50)
    response = _preview(api, created["id"], {"input": {"name": "Ada"}, "dry_run_models": True})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert fake_openai.requests == []
    assert body["status"] == "COMPLETED" and body["dry_run"] is True
    greet, ask = body["steps"]
    assert greet["dry_run"] is False and ask["dry_run"] is True
    prompt = ask["input"]["prompt"]
    assert prompt == "Answer briefly, Hello Ada: what is a prompt workflow?"
    assert ask["token_estimate"] == {"input": -(-len(prompt) // 4), "output": 50,
                                     "total": -(-len(prompt) // 4) + 50, "estimated": True}
    assert "dry run" in ask["output"]
    assert body["token_estimate"]["estimated"] is True


def test_the_same_preview_without_dry_run_does_call_the_provider(api, create_workflow, fake_openai):
    created = _openai_workflow(create_workflow)
    body = _preview(api, created["id"], {"input": {"name": "Ada"}}).json()
    assert len(fake_openai.requests) == 1
    ask = body["steps"][1]
    assert ask["output"] == "real answer" and ask["dry_run"] is False
    assert ask["token_estimate"] == {"input": 7, "output": 3, "total": 10, "estimated": False}
    assert body["token_estimate"]["estimated"] is False


def test_dry_run_of_a_json_step_warns_that_the_format_was_not_checked(api, create_workflow):
    created = create_workflow(steps=[{"name": "ask", "order": 1, "type": "PROMPT", "config": {
        "template": "JSON please", "output_format": "json", "model": {"provider": "echo", "model": "echo"}}}])
    body = _preview(api, created["id"], {"input": {"name": "Ada"}, "dry_run_models": True}).json()
    assert body["status"] == "COMPLETED"
    assert any('output_format "json" was not checked' in w for w in body["steps"][0]["warnings"])


# --- costs ------------------------------------------------------------------------


def test_cost_estimate_uses_the_price_list_and_is_null_when_a_price_is_unknown(api, create_workflow, fake_openai):
    created = _openai_workflow(create_workflow)
    unknown = _preview(api, created["id"], {"input": {"name": "Ada"}, "dry_run_models": True}).json()
    assert unknown["cost_estimate_usd"] is None and unknown["steps"][1]["cost_estimate_usd"] is None
    assert unknown["steps"][0]["cost_estimate_usd"] == 0

    ModelPrice.objects.create(provider="openai", model="gpt-4o-mini",
                              input_per_million_usd=Decimal("1.00"), output_per_million_usd=Decimal("2.00"))
    from providers.pricing import clear_cache

    clear_cache()
    body = _preview(api, created["id"], {"input": {"name": "Ada"}}).json()
    assert body["cost_estimate_usd"] == pytest.approx((7 * 1 + 3 * 2) / 1_000_000)
    assert body["steps"][1]["cost_estimate_usd"] == pytest.approx(13 / 1_000_000)


def test_echo_costs_nothing(api, workflow):
    body = _preview(api, workflow.pk, {"use_sample_data": True}).json()
    assert body["cost_estimate_usd"] == 0


# --- until and steps_output -------------------------------------------------------


def test_until_runs_the_steps_up_to_that_one(api, workflow):
    body = _preview(api, workflow.pk, {"input": {"name": "Ada", "times": 2}, "until": "check"}).json()
    assert [s["name"] for s in body["steps"]] == ["greet", "check"]
    assert body["output"] is True and body["status"] == "COMPLETED"


def test_a_single_step_runs_with_stand_in_outputs_for_the_steps_before_it(api, workflow):
    body = _preview(api, workflow.pk, {
        "input": {"name": "Ada", "times": 2}, "until": "ask",
        "steps_output": {"greet": "Bonjour", "check": True},
    }).json()
    assert [(s["name"], s["status"]) for s in body["steps"]] == [
        ("greet", "PROVIDED"), ("check", "PROVIDED"), ("ask", "COMPLETED")]
    assert body["steps"][0]["output"] == "Bonjour"
    assert body["output"] == "Repeat: Bonjour"


def test_a_provided_step_is_not_run(api, create_workflow, fake_openai):
    created = _openai_workflow(create_workflow)
    body = _preview(api, created["id"], {"input": {"name": "Ada"}, "steps_output": {"ask": "canned"}}).json()
    assert fake_openai.requests == []
    assert body["output"] == "canned" and body["steps"][1]["status"] == "PROVIDED"


@pytest.mark.parametrize(("body", "field"), [
    ({"until": "nope"}, "until"),
    ({"steps_output": {"greet": "x", "nope": 1}}, "steps_output"),
])
def test_unknown_step_names_are_400_naming_the_field(api, workflow, body, field):
    response = _preview(api, workflow.pk, {"use_sample_data": True, **body})
    assert response.status_code == 400
    assert list(response.json()["extra"]["errors"]) == [field]
    assert '"nope"' in response.json()["message"] and "greet" in response.json()["message"]


def test_steps_output_must_be_an_object(api, workflow):
    response = _preview(api, workflow.pk, {"use_sample_data": True, "steps_output": ["greet"]})
    assert response.status_code == 400 and "steps_output" in str(response.json())


# --- from_execution ---------------------------------------------------------------


def test_from_execution_uses_the_past_runs_input(api, workflow, make_execution):
    past = make_execution(workflow)
    WorkflowExecution.objects.filter(pk=past.pk).update(input={"name": "Grace", "times": 1})
    body = _preview(api, workflow.pk, {"from_execution": str(past.pk)}).json()
    assert body["steps"][0]["output"] == "Hello Grace"
    overridden = _preview(api, workflow.pk, {"from_execution": str(past.pk), "input": {"name": "Lin"}}).json()
    assert overridden["steps"][0]["output"] == "Hello Lin"


def test_from_execution_of_another_user_is_404(api, other_workflow, make_execution, workflow):
    theirs = make_execution(other_workflow)
    WorkflowExecution.objects.filter(pk=theirs.pk).update(input={"name": "Secret"})
    response = _preview(api, workflow.pk, {"from_execution": str(theirs.pk)})
    assert response.status_code == 404
    assert "Secret" not in response.content.decode()


def test_from_execution_unknown_or_malformed(api, workflow):
    assert _preview(api, workflow.pk, {"from_execution": str(uuid.uuid4())}).status_code == 404
    response = _preview(api, workflow.pk, {"from_execution": "not-a-uuid"})
    assert response.status_code == 400 and "from_execution" in str(response.json())


def test_from_execution_of_another_of_my_workflows_is_400(api, workflow, create_workflow, make_execution):
    from workflows.models import Workflow

    mine = Workflow.objects.get(pk=create_workflow(name="Other")["id"])
    past = make_execution(mine)
    response = _preview(api, workflow.pk, {"from_execution": str(past.pk)})
    assert response.status_code == 400 and "from_execution" in response.json()["extra"]["errors"]


# --- nothing persisted ------------------------------------------------------------


@pytest.mark.parametrize("options", [
    {"use_sample_data": True},
    {"use_sample_data": True, "dry_run_models": True},
    {"use_sample_data": True, "until": "check", "steps_output": {"greet": "x"}},
])
def test_nothing_is_persisted_and_nothing_is_queued(api, workflow, options, django_capture_on_commit_callbacks):
    before, queues, versions = _counts(), _queue_lengths(), workflow.versions.count()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = _preview(api, workflow.pk, options)
    assert response.status_code == 200, response.json()
    assert callbacks == []  # nothing waits for a commit to send either
    time.sleep(0.5)  # well past the relay's batching window (START_BATCH_SECONDS, 0.05 s)
    assert _counts() == before
    assert _queue_lengths() == queues
    assert workflow.versions.count() == versions


def test_the_queue_check_sees_an_enqueued_run(api, workflow, django_capture_on_commit_callbacks):
    """The broker check above is not vacuous: an execute (committed) does add a message."""
    queues = _queue_lengths()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/workflows/{workflow.pk}/execute", {"input": {"name": "Ada"}}, format="json")
    assert response.status_code == 202
    deadline = time.monotonic() + 10  # the relay sends from its own thread, just after the commit
    while _queue_lengths() == queues and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _queue_lengths() != queues
