"""PROMPT ``output_schema``: each provider is asked for structured output in its own wire
format (seen on the fake server), and the answer is checked against the schema."""
from __future__ import annotations

import json

import pytest

from providers.registry import get_adapter
from workflows.engine.runner import run_step
from workflows.engine.types import COMPLETED, FAILED, RunContext, StepDefinition

from .fakes import Reply
from .wires import Wire

SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number"}},
                                                         "required": ["price"]}}},
    "required": ["items"],
}


def _step(wire: Wire, **config) -> StepDefinition:
    return StepDefinition.from_dict({
        "name": "extract", "order": 1, "type": "PROMPT", "timeout_seconds": 5,
        "config": {"template": "List the prices", "model": {"provider": wire.provider, "model": wire.model},
                   "output_schema": SCHEMA, **config},
    })


def _schema_on_the_wire(wire: Wire, body: dict) -> dict:
    """Where each provider's API takes the schema, read from the request body it received."""
    if wire.provider == "openai":
        response_format = body["response_format"]
        assert response_format["type"] == "json_schema"
        assert response_format["json_schema"]["name"]
        return response_format["json_schema"]["schema"]
    if wire.provider == "anthropic":
        output_format = body["output_config"]["format"]
        assert output_format["type"] == "json_schema"
        assert "tools" not in body  # native structured output, not a forced tool call
        return output_format["schema"]
    generation = body["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    return generation["responseJsonSchema"]


def test_each_provider_is_sent_the_schema_and_a_matching_answer_is_parsed(wire: Wire, fake_server) -> None:
    answer = {"items": [{"price": 3.5}, {"price": 2}]}
    fake_server.queue(Reply(200, wire.success(json.dumps(answer))))

    result = run_step(_step(wire), RunContext(inputs={}), providers=get_adapter)

    assert result.status == COMPLETED, result.error
    assert result.output == answer
    [seen] = fake_server.requests
    assert _schema_on_the_wire(wire, seen.json) == SCHEMA


def test_an_answer_breaking_the_schema_fails_naming_the_json_path(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(200, wire.success(json.dumps({"items": [{"price": 1}, {"price": 2}, {"price": "9.99"}]}))))

    result = run_step(_step(wire), RunContext(inputs={}), providers=get_adapter)

    assert result.status == FAILED
    assert result.error["type"] == "InvalidOutput"
    assert result.error["details"]["path"] == "$.items[2].price"
    assert "$.items[2].price" in result.error["message"]
    assert result.model_outputs[0]["status"] == "ok"  # the call worked and its tokens count
    assert result.tokens["total"] > 0


def test_without_a_schema_no_structured_output_is_asked_for(wire: Wire, fake_server) -> None:
    fake_server.queue(Reply(200, wire.success("plain")))

    result = run_step(_step(wire, output_schema=None), RunContext(inputs={}), providers=get_adapter)

    assert result.status == COMPLETED, result.error
    body = fake_server.requests[0].json
    assert "response_format" not in body and "output_config" not in body
    assert "responseJsonSchema" not in (body.get("generationConfig") or {})


@pytest.mark.parametrize("mode", ["parallel", "fallback"])
def test_multi_model_steps_send_the_schema_and_skip_answers_that_break_it(mode, fake_server, provider_settings) -> None:
    from providers.flags import MULTI_MODEL

    from .wires import WIRES

    openai, anthropic = WIRES[0], WIRES[1]
    provider_settings(**openai.settings(fake_server), **anthropic.settings(fake_server))

    def reply(request):
        if request.path == openai.path:
            return Reply(200, openai.success(json.dumps({"items": "none"})))
        return Reply(200, anthropic.success(json.dumps({"items": [{"price": 4}]})))

    fake_server.default = reply
    step = StepDefinition.from_dict({
        "name": "extract", "order": 1, "type": "PROMPT", "timeout_seconds": 5,
        "config": {"template": "List the prices", "mode": mode, "output_schema": SCHEMA, "models": [
            {"provider": "openai", "model": openai.model}, {"provider": "anthropic", "model": anthropic.model}]},
    })

    result = run_step(step, RunContext(inputs={}), providers=get_adapter, limits={"features": {MULTI_MODEL}})

    assert result.status == COMPLETED, result.error
    assert result.output == {"items": [{"price": 4}]}
    assert any("$.items" in warning for warning in result.warnings)
    for seen in fake_server.requests:
        assert _schema_on_the_wire(openai if seen.path == openai.path else anthropic, seen.json) == SCHEMA
