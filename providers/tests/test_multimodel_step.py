"""Multi-model PROMPT steps end to end: the ``workflow.multiModel`` switch at validation
(API) and at run time, the step's outputs through ``runner.run_step`` with the real
SDKs against the fake server, the per-step call budget, and runs through the
orchestrator with the echo provider."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from waffle.models import Switch

from providers import pricing
from providers.flags import MULTI_MODEL, live_features
from providers.models import ModelPrice
from providers.registry import get_adapter
from workflows.engine.retry import retry_delay
from workflows.engine.runner import run_step, validate_definition
from workflows.engine.types import COMPLETED, FAILED, RunContext, StepDefinition, StepResult
from workflows.models import StepExecutionStatus, WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.services.orchestration import execution_admit, step_attempt_run
from workflows.tests.factories import make_workflow

from .fakes import FakeServer, Reply
from .multimodel import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    THREE,
    calls_to,
    fail,
    ok,
    point_all_providers_at,
    script,
    wait_until,
)

ON = frozenset({MULTI_MODEL})
ECHO = {"provider": "echo", "model": "echo"}
TWO_ECHOES = [{"provider": "echo", "model": "a"}, {"provider": "echo", "model": "b"}]


def prompt_step(config: dict[str, Any], **fields: Any) -> StepDefinition:
    return StepDefinition.from_dict({"name": "ask", "order": 1, "type": "PROMPT",
                                     "config": {"template": "Hello {{ input.name }}", **config},
                                     "timeout_seconds": 10, **fields})


@pytest.fixture
def all_wires(fake_server, provider_settings) -> FakeServer:
    return point_all_providers_at(fake_server, provider_settings)


def run(step: StepDefinition, *, features=ON) -> StepResult:
    return run_step(step, RunContext(inputs={"name": "Ada"}), providers=get_adapter, limits={"features": features})


# --- the switch: off by default, refused at validation and at run time -----------------------


def test_with_the_switch_off_a_multi_model_step_fails_before_any_call(all_wires: FakeServer) -> None:
    result = run(prompt_step({"models": THREE[:2], "mode": "parallel"}), features=frozenset())

    assert result.status == FAILED and not result.retryable
    assert result.error["type"] == "ConfigError"
    assert MULTI_MODEL in result.error["message"] and "admin → Waffle → Switches" in result.error["message"]
    assert result.error["details"]["flag"] == MULTI_MODEL
    assert all_wires.requests == []


def test_validation_refuses_several_models_unless_the_switch_is_on() -> None:
    step = {"name": "ask", "order": 1, "type": "PROMPT",
            "config": {"template": "x", "models": TWO_ECHOES, "mode": "race"}}

    errors = validate_definition([step], [])
    assert list(errors) == ["steps[0].config.models"]
    assert MULTI_MODEL in errors["steps[0].config.models"][0]
    assert "admin → Waffle → Switches" in errors["steps[0].config.models"][0]
    assert validate_definition([step], [], features=ON) == {}


@pytest.mark.parametrize(
    ("config", "field", "text"),
    [
        ({"models": []}, "steps[0].config.models", "non-empty list"),
        ({"models": [ECHO] * 9}, "steps[0].config.models", "at most 8"),
        ({"models": [ECHO, {"provider": "echo"}]}, "steps[0].config.models[1]", '"model" name'),
        ({"models": TWO_ECHOES, "mode": "fastest"}, "steps[0].config.mode", "parallel, fallback, race"),
        ({"model": ECHO, "mode": "race"}, "steps[0].config.mode", "only applies to config.models"),
    ],
    ids=["empty", "too-many", "no-model-name", "unknown-mode", "mode-without-models"],
)
def test_multi_model_configs_are_checked_when_the_switch_is_on(config, field, text) -> None:
    errors = validate_definition([{"name": "ask", "order": 1, "type": "PROMPT", "config": {"template": "x", **config}}],
                                 [], features=ON)
    assert field in errors and text in errors[field][0], errors


def test_the_legacy_single_model_config_is_unchanged_with_the_switch_off(wire, fake_server) -> None:
    fake_server.queue(Reply(200, wire.success("Hello, Ada!")))

    result = run(prompt_step({"model": {"provider": wire.provider, "model": wire.model}}), features=frozenset())

    assert result.status == COMPLETED and result.output == "Hello, Ada!" and result.outputs is None
    assert len(result.model_outputs) == 1 and result.input["model"]["provider"] == wire.provider
    assert validate_definition([{"name": "a", "order": 1, "type": "PROMPT",
                                 "config": {"template": "x", "models": [ECHO]}}], []) == {}


# --- the step's result -----------------------------------------------------------------


def test_a_parallel_step_exposes_output_outputs_model_outputs_tokens_and_warnings(all_wires: FakeServer) -> None:
    script(all_wires, {
        "gpt-a": [fail(OPENAI, 500, "melted")],
        "claude-b": [ok(ANTHROPIC, "Claude says hi", delay=0.2)],
        "gemini-c": [ok(GEMINI, "Gemini says hi", delay=0.2)],
    })

    result = run(prompt_step({"models": THREE, "mode": "parallel", "system": "Be brief."}))

    assert result.status == COMPLETED, result.error
    assert result.output == "Claude says hi"
    assert result.outputs == {"openai:gpt-a": None, "anthropic:claude-b": "Claude says hi",
                              "gemini:gemini-c": "Gemini says hi"}
    assert [r["status"] for r in result.model_outputs] == ["error", "ok", "ok"]
    assert result.model_outputs[0]["error"]["step"] == "ask"
    assert result.tokens == {"input": 25, "output": 11, "total": 36}  # 12+5 and 13+6
    assert "openai:gpt-a failed (ProviderUnavailable): OpenAI is unavailable (HTTP 500): melted" in result.warnings
    assert result.input["models"] == THREE and result.input["mode"] == "parallel"
    assert result.input["prompt"] == "Hello Ada" and result.input["system"] == "Be brief."


def test_json_output_comes_from_the_first_model_whose_answer_parses(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [ok(OPENAI, "Sure! Here you go")], "claude-b": [ok(ANTHROPIC, '```json\n{"n": 2}\n```')]})

    result = run(prompt_step({"models": THREE[:2], "mode": "parallel", "output_format": "json"}))

    assert result.status == COMPLETED and result.output == {"n": 2}
    assert result.outputs == {"openai:gpt-a": None, "anthropic:claude-b": {"n": 2}}
    assert result.model_outputs[0]["error"]["type"] == "InvalidOutput"
    assert result.model_outputs[0]["content"] == "Sure! Here you go"


def test_when_every_model_fails_the_step_fails_with_each_models_error(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [fail(OPENAI, 400, "bad")], "claude-b": [fail(ANTHROPIC, 401, "no")],
                       "gemini-c": [fail(GEMINI, 503, "later")]})

    result = run(prompt_step({"models": THREE, "mode": "fallback"}))

    assert result.status == FAILED
    assert result.error["type"] == "AllModelsFailed" and result.error["step"] == "ask"
    assert [e["type"] for e in result.error["details"]["errors"]] == ["BadRequest", "InvalidCredentials",
                                                                       "ProviderUnavailable"]
    assert result.retryable  # the 503 may pass next time
    assert len(result.warnings) == 3 and len(result.model_outputs) == 3


@pytest.mark.parametrize("mode", ["parallel", "fallback", "race"])
def test_total_calls_per_step_never_exceed_attempts_times_models(all_wires: FakeServer, mode: str) -> None:
    # Every model keeps failing with a retryable 500: the step makes its attempts, and
    # each attempt calls each model once, never more.
    all_wires.default = lambda request: Reply(500, {"error": {"message": "down"}})
    max_retries = 2
    step = prompt_step({"models": THREE, "mode": mode},
                       retry_config={"max_retries": max_retries, "backoff_base_seconds": 0, "jitter": False})
    attempts = 0
    retry_count = 0
    while True:
        result = run(step)
        attempts += 1
        assert result.status == FAILED and result.retryable
        if retry_delay(step.retry_config, retry_count=retry_count, result=result) is None:
            break
        retry_count += 1

    assert attempts == max_retries + 1
    assert len(all_wires.requests) == (max_retries + 1) * len(THREE)  # the bound, reached and not passed


def test_race_through_the_step_aborts_the_losers(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [ok(OPENAI, "late", delay=3.0)], "gemini-c": [ok(GEMINI, "first!", delay=0.05)]})

    result = run(prompt_step({"models": [THREE[0], THREE[2]], "mode": "race"}))

    assert result.output == "first!"
    assert result.model_outputs[0]["error"]["type"] == "Cancelled"
    loser = calls_to(all_wires, "gpt-a")[0]
    assert wait_until(lambda: loser.disconnected is not None) and loser.aborted


# --- through the API and the orchestrator ------------------------------------------------


@pytest.fixture
def multi_model_on(db) -> None:
    Switch.objects.filter(name=MULTI_MODEL).update(active=True)


def _workflow_body(models: list[dict[str, Any]], mode: str = "parallel") -> dict[str, Any]:
    return {"name": "Panel", "variables": [{"name": "topic", "type": "STRING", "sample": "owls"}],
            "steps": [{"name": "ask", "order": 1, "type": "PROMPT",
                       "config": {"template": "About {{ input.topic }}", "models": models, "mode": mode}}]}


@pytest.mark.django_db
def test_the_switch_exists_and_is_off_after_migrating() -> None:
    switch = Switch.objects.get(name=MULTI_MODEL)
    assert switch.active is False and "config.models" in switch.note
    assert MULTI_MODEL not in live_features()


@pytest.mark.django_db
def test_the_api_refuses_a_two_model_step_while_the_switch_is_off(api) -> None:
    response = api.post("/api/workflows/", _workflow_body(TWO_ECHOES), format="json")

    assert response.status_code == 400
    body = response.json()
    assert MULTI_MODEL in body["message"] and "admin → Waffle → Switches" in body["message"]
    assert MULTI_MODEL in body["extra"]["errors"]["steps[0].config.models"][0]


@pytest.mark.django_db
def test_the_api_accepts_it_once_staff_turn_the_switch_on(api, multi_model_on) -> None:
    response = api.post("/api/workflows/", _workflow_body(TWO_ECHOES, "race"), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["steps"][0]["config"]["mode"] == "race"


@pytest.mark.django_db
def test_preview_runs_a_multi_model_step(api, multi_model_on) -> None:
    workflow_id = api.post("/api/workflows/", _workflow_body(TWO_ECHOES), format="json").json()["id"]

    body = api.post(f"/api/workflows/{workflow_id}/preview", {"use_sample_data": True}, format="json").json()

    assert body["status"] == COMPLETED and body["output"] == "About owls"
    assert body["token_estimate"]["total"] == 2 * (2 + 2)  # two echo calls of 2 words in, 2 out


@pytest.fixture
def in_process(monkeypatch):
    # As in test_pricing: the worker would close stale connections, here the test's own.
    monkeypatch.setattr("workflows.services.orchestration.close_old_connections", lambda: None)


def _run_in_process(workflow, user):
    execution = execution_start(workflow=workflow, inputs={}, started_by=user)
    execution_admit(execution_id=execution.id)
    for _ in range(10):
        pending = WorkflowStepExecution.objects.filter(execution=execution, status=StepExecutionStatus.PENDING).first()
        if pending is None:
            break
        step_attempt_run(step_execution_id=pending.id, attempt=pending.attempt)
    execution.refresh_from_db()
    return execution


def _steps(models: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    return [
        {"name": "ask", "type": "PROMPT", "config": {"template": "hello there", "models": models, "mode": mode}},
        {"name": "show", "type": "TRANSFORM", "config": {"template": "{{ steps.ask.outputs | dictsort | tojson }}"}},
    ]


@pytest.mark.django_db
def test_orchestrated_race_between_two_echoes_keeps_the_faster(user, in_process, multi_model_on) -> None:
    models = [{"provider": "echo", "model": "slow", "delay_ms": 3000}, {"provider": "echo", "model": "fast", "delay_ms": 10}]
    workflow = make_workflow(user, steps=_steps(models, "race"))

    execution = _run_in_process(workflow, user)

    assert execution.status == "COMPLETED", execution.error
    step = WorkflowStepExecution.objects.get(execution=execution, step_name="ask")
    assert step.output == "hello there"
    assert step.outputs == {"echo:slow": None, "echo:fast": "hello there"}
    slow, fast = step.model_outputs
    assert fast["status"] == "ok" and slow["error"]["type"] == "Cancelled"
    assert fast["cost_usd"] == 0.0 and slow["cost_usd"] == 0.0  # echo is free; the cancelled call spent nothing
    assert execution.output == '[["echo:fast", "hello there"], ["echo:slow", null]]'  # later steps see outputs
    assert execution.aggregate_tokens == {"input": 2, "output": 2, "total": 4, "cost_usd": 0.0}


@pytest.mark.django_db
def test_orchestrated_parallel_sums_tokens_and_reports_failed_models_on_the_execution(
    user, in_process, multi_model_on
) -> None:
    models = [{"provider": "echo", "model": "a"}, {"provider": "echo", "model": "broken", "delay_ms": -1},
              {"provider": "echo", "model": "c"}]
    workflow = make_workflow(user, steps=_steps(models, "parallel"))

    execution = _run_in_process(workflow, user)

    assert execution.status == "COMPLETED", execution.error
    step = WorkflowStepExecution.objects.get(execution=execution, step_name="ask")
    assert [r["status"] for r in step.model_outputs] == ["ok", "error", "ok"]
    assert step.tokens == {"input": 4, "output": 4, "total": 8}
    assert execution.aggregate_tokens["total"] == 8
    assert any("echo:broken failed (BadRequest)" in warning for warning in execution.warnings)


@pytest.mark.django_db
def test_a_run_fails_if_the_switch_was_turned_off_after_saving(user, in_process) -> None:
    workflow = make_workflow(user, steps=_steps(TWO_ECHOES, "parallel"))  # the ORM skips API validation

    execution = _run_in_process(workflow, user)

    assert execution.status == "FAILED"
    assert execution.error["type"] == "ConfigError" and MULTI_MODEL in execution.error["message"]


@pytest.mark.django_db
def test_costs_are_annotated_on_every_model_output(all_wires: FakeServer) -> None:
    pricing.clear_cache()
    ModelPrice.objects.create(provider="openai", model="gpt-a", input_per_million_usd=Decimal("1"),
                              output_per_million_usd=Decimal("2"))
    script(all_wires, {"gpt-a": [ok(OPENAI, "a")], "claude-b": [ok(ANTHROPIC, "b")]})

    result = run(prompt_step({"models": THREE[:2], "mode": "parallel"}))
    pricing.annotate_costs(result.model_outputs)

    priced, unpriced = result.model_outputs
    assert priced["cost_usd"] == pytest.approx((11 * 1 + 4 * 2) / 1e6)
    assert unpriced["cost_usd"] is None  # unknown, not 0
    assert pricing.sum_costs(result.model_outputs) is None  # so the step's cost is unknown too
    pricing.clear_cache()

