"""workflows/engine/steps/*: what each step type does with its config, via run_step."""
from __future__ import annotations

from typing import Any

import pytest

from providers import errors as provider_errors
from providers.registry import get_adapter
from workflows.engine.runner import run_step
from workflows.engine.types import COMPLETED, FAILED, NextAction, StepResult

from .helpers import ECHO, ScriptedAdapter, make_context, make_step


def run(step_type: str, config: dict[str, Any], *, adapter: ScriptedAdapter | None = None, context=None, **fields: Any) -> StepResult:
    step = make_step("s", 1, step_type, config=config, **fields)
    providers = adapter.resolver if adapter else get_adapter
    return run_step(step, context or make_context({"topic": "owls"}), providers=providers)


# ------------------------------------------------------------------ PROMPT


def test_prompt_step_sends_the_rendered_prompt_and_records_the_call() -> None:
    result = run("PROMPT", {"template": "Write about {{ input.topic }}", "system": "Be {{ 'brief' }}", "model": ECHO})
    assert result.status == COMPLETED
    assert result.output == "Write about owls"  # echo answers with the prompt
    assert result.input == {
        "prompt": "Write about owls",
        "system": "Be brief",
        "model": ECHO,
        "variables": {"topic": "owls"},
    }
    [call] = result.model_outputs
    assert call["provider"] == "echo" and call["status"] == "ok" and call["content"] == "Write about owls"
    assert call["tokens"] == {"input": 5, "output": 3, "total": 8}
    assert result.tokens == call["tokens"]


def test_prompt_step_passes_model_params_and_the_step_timeout_to_the_provider() -> None:
    adapter = ScriptedAdapter("fine")
    run("PROMPT", {"template": "hi", "model": {"provider": "x", "model": "m-1", "temperature": 0.2}}, adapter=adapter, timeout_seconds=9)
    [request] = adapter.requests
    assert (request.provider, request.model, request.params, request.timeout_seconds) == ("x", "m-1", {"temperature": 0.2}, 9.0)


def test_model_calls_default_to_a_120_second_timeout() -> None:
    adapter = ScriptedAdapter()
    run("PROMPT", {"template": "hi", "model": ECHO}, adapter=adapter)
    assert adapter.requests[0].timeout_seconds == 120


def test_prompt_step_falls_back_to_the_linked_prompt() -> None:
    prompt = {"id": 1, "name": "p", "template": "About {{ input.topic }}", "system": "sys", "model_config": {"provider": "y", "model": "m"}}
    adapter = ScriptedAdapter()
    result = run("PROMPT", {}, adapter=adapter, prompt=prompt)
    assert result.status == COMPLETED
    request = adapter.requests[0]
    assert (request.prompt, request.system, request.provider) == ("About owls", "sys", "y")


def test_step_config_overrides_the_linked_prompt() -> None:
    prompt = {"template": "prompt's", "system": "prompt's", "model_config": {"provider": "y", "model": "m"}}
    adapter = ScriptedAdapter()
    run("PROMPT", {"template": "step's", "model": {"provider": "z", "model": "n"}}, adapter=adapter, prompt=prompt)
    assert (adapter.requests[0].prompt, adapter.requests[0].provider) == ("step's", "z")


def test_a_single_entry_models_list_acts_like_model() -> None:
    assert run("PROMPT", {"template": "hi", "models": [ECHO]}).output == "hi"


def test_multi_model_steps_fail_until_the_feature_exists() -> None:
    result = run("PROMPT", {"template": "hi", "models": [ECHO, ECHO]})
    assert result.status == FAILED and result.error["type"] == "ConfigError"
    assert "workflow.multiModel" in result.error["message"]


def test_json_output_is_parsed() -> None:
    result = run("PROMPT", {"template": "x", "model": ECHO, "output_format": "json"}, adapter=ScriptedAdapter('{"score": 4}'))
    assert result.output == {"score": 4}


def test_json_inside_a_markdown_fence_is_accepted() -> None:
    answer = '```json\n{"score": 4}\n```'
    result = run("PROMPT", {"template": "x", "model": ECHO, "output_format": "json"}, adapter=ScriptedAdapter(answer))
    assert result.output == {"score": 4}


def test_an_answer_that_is_not_json_fails_as_invalid_output_showing_the_answer() -> None:
    result = run("PROMPT", {"template": "x", "model": ECHO, "output_format": "json"}, adapter=ScriptedAdapter("Sure! Here it is"))
    assert result.status == FAILED
    assert result.error["type"] == "InvalidOutput"
    assert result.error["details"]["snippet"] == "Sure! Here it is"
    assert result.retryable is False
    # The model did answer: its tokens still count and its content is kept.
    assert result.tokens["total"] == 5 and result.model_outputs[0]["content"] == "Sure! Here it is"


@pytest.mark.parametrize(
    ("error", "retryable"),
    [(provider_errors.RateLimited("slow down", status_code=429, retry_after=12), True),
     (provider_errors.ProviderUnavailable("503"), True),
     (provider_errors.ProviderTimeout("timeout"), True),
     (provider_errors.MissingCredentials("Set OPENAI_API_KEY"), False),
     (provider_errors.InvalidCredentials("bad key"), False),
     (provider_errors.BadRequest("bad"), False)],
)
def test_provider_errors_keep_their_type_and_retry_hints(error: provider_errors.ProviderError, retryable: bool) -> None:
    result = run("PROMPT", {"template": "x", "model": ECHO}, adapter=ScriptedAdapter(error=error))
    assert result.status == FAILED
    assert result.error["type"] == error.type and result.error["message"] == error.message and result.error["step"] == "s"
    assert result.retryable is retryable
    assert result.retry_after == error.retry_after
    assert result.model_outputs[0]["status"] == "error"
    assert result.model_outputs[0]["error"]["type"] == error.type


def test_rate_limit_payload_keeps_status_code_and_retry_after() -> None:
    error = provider_errors.RateLimited("slow down", status_code=429, retry_after=12)
    result = run("PROMPT", {"template": "x", "model": ECHO}, adapter=ScriptedAdapter(error=error))
    assert result.error["details"] == {"status_code": 429, "retry_after": 12}


def test_unknown_provider_fails_the_step_naming_known_ones() -> None:
    result = run("PROMPT", {"template": "x", "model": {"provider": "nope", "model": "m"}})
    assert result.error["type"] == "UnknownProvider" and "echo" in result.error["message"]


def test_a_template_error_fails_before_any_model_call() -> None:
    adapter = ScriptedAdapter()
    result = run("PROMPT", {"template": "{{ input.missing }}", "model": ECHO}, adapter=adapter)
    assert result.error["type"] == "TemplateError"
    assert adapter.requests == []


def test_prompt_step_without_a_model_fails_with_config_error() -> None:
    result = run("PROMPT", {"template": "x"})
    assert result.error["type"] == "ConfigError" and "config.model" in result.error["message"]


# --------------------------------------------------------------- CONDITION


@pytest.mark.parametrize(
    ("expression", "config", "output", "next_action"),
    [("input.topic == 'owls'", {}, True, NextAction("continue")),
     ("input.topic == 'cats'", {}, False, NextAction("stop")),
     ("input.topic == 'owls'", {"if_true": "skip_to:end"}, True, NextAction("skip_to", "end")),
     ("input.topic == 'cats'", {"if_false": "continue"}, False, NextAction("continue"))],
)
def test_condition_branches(expression: str, config: dict[str, Any], output: bool, next_action: NextAction) -> None:
    result = run("CONDITION", {"expression": expression, **config})
    assert (result.status, result.output, result.next) == (COMPLETED, output, next_action)


def test_condition_records_the_expression_and_its_value() -> None:
    result = run("CONDITION", {"expression": "input.topic|length"})
    assert result.input == {"expression": "input.topic|length", "value": 4}
    assert result.output is True


def test_condition_on_an_undefined_name_fails() -> None:
    result = run("CONDITION", {"expression": "steps.nothing.output"})
    assert result.status == FAILED and result.error["type"] == "TemplateError"


# --------------------------------------------------------------- TRANSFORM


def test_transform_renders_without_calling_a_model() -> None:
    adapter = ScriptedAdapter()
    context = make_context({"topic": "owls"}, draft={"output": "text", "outputs": None, "status": COMPLETED})
    result = run("TRANSFORM", {"template": "{{ steps.draft.output|upper }}"}, adapter=adapter, context=context)
    assert (result.output, result.input) == ("TEXT", {"template_rendered": "TEXT"})
    assert adapter.requests == [] and result.model_outputs == []


def test_transform_json_output_builds_structured_data() -> None:
    result = run("TRANSFORM", {"template": '{"topic": {{ input.topic|tojson }}}', "output_format": "json"})
    assert result.output == {"topic": "owls"}


def test_transform_json_that_does_not_parse_is_invalid_output() -> None:
    result = run("TRANSFORM", {"template": "{oops", "output_format": "json"})
    assert result.error["type"] == "InvalidOutput"


# --------------------------------------------------------- common behaviour


def test_on_error_continue_uses_default_output_but_keeps_the_failure() -> None:
    result = run("TRANSFORM", {"template": "{{ nope }}", "default_output": "fallback"}, on_error="continue")
    assert result.status == FAILED
    assert result.output == "fallback"
    assert result.error["type"] == "TemplateError"


def test_on_error_fail_leaves_no_output() -> None:
    assert run("TRANSFORM", {"template": "{{ nope }}", "default_output": "fallback"}).output is None


def test_unknown_step_type_fails_the_step() -> None:
    result = run("WEBHOOK_CALL", {})
    assert result.error["type"] == "ConfigError" and "PROMPT" in result.error["message"]


class _BrokenAdapter:
    name = "broken"

    def complete(self, request: Any) -> Any:
        raise KeyError("choices")


def test_a_crashing_adapter_becomes_an_internal_error_not_a_crash() -> None:
    step = make_step("s", 1, "PROMPT", config={"template": "x", "model": ECHO})
    result = run_step(step, make_context(), providers=lambda name: _BrokenAdapter())
    assert result.status == FAILED
    assert result.error == {"type": "InternalError", "message": "KeyError: 'choices'", "step": "s", "details": {}}
    assert result.retryable is False
