"""validate_definition: what the API refuses to save, and how it tells the builder."""
from __future__ import annotations

from typing import Any

import pytest

from workflows.engine.runner import validate_definition
from workflows.engine.steps import get_handler

from .helpers import ECHO


def prompt_step(name: str = "ask", order: int = 0, **fields: Any) -> dict[str, Any]:
    return {"name": name, "order": order, "type": "PROMPT", "config": {"template": "Hi {{ input.who }}", "model": ECHO}, **fields}


def condition(name: str, order: int, **config: Any) -> dict[str, Any]:
    return {"name": name, "order": order, "type": "CONDITION", "config": {"expression": "true", **config}}


def transform(name: str, order: int, **fields: Any) -> dict[str, Any]:
    return {"name": name, "order": order, "type": "TRANSFORM", "config": {"template": "x"}, **fields}


WHO = [{"name": "who", "type": "STRING", "required": True, "default": None, "sample": "Ann"}]


def test_a_good_definition_has_no_errors() -> None:
    steps = [
        prompt_step(retry_config={"max_retries": 2}, on_error="skip_to:done", timeout_seconds=30),
        condition("gate", 1, if_true="skip_to:done", if_false="stop"),
        transform("middle", 2, on_error="continue"),
        transform("done", 3),
    ]
    assert validate_definition(steps, WHO) == {}


@pytest.mark.parametrize("name", ["2fast", "with space", "class", "", None])
def test_variable_names_must_be_identifiers(name: Any) -> None:
    errors = validate_definition([], [{"name": name, "type": "STRING"}])
    assert "letters, digits and _" in errors["variables[0].name"][0]


def test_variable_names_must_be_unique() -> None:
    errors = validate_definition([], [{"name": "a", "type": "STRING"}, {"name": "a", "type": "NUMBER"}])
    assert list(errors) == ["variables[1].name"]


def test_variable_type_must_be_known() -> None:
    assert "STRING, NUMBER, BOOLEAN, JSON" in validate_definition([], [{"name": "a", "type": "TEXT"}])["variables[0].type"][0]


def test_variable_default_and_sample_must_match_the_type() -> None:
    errors = validate_definition([], [{"name": "n", "type": "NUMBER", "default": "3", "sample": True}])
    assert set(errors) == {"variables[0].default", "variables[0].sample"}


def test_step_names_orders_and_types_are_checked() -> None:
    steps = [transform("a", 0), transform("a", 0), {"name": "1b", "order": -1, "type": "LOOP"}]
    errors = validate_definition(steps, [])
    assert set(errors) == {"steps[1].name", "steps[1].order", "steps[2].name", "steps[2].order", "steps[2].type"}
    assert "APPROVAL, CONDITION, DELAY, HTTP, MAP, PROMPT, TRANSFORM, WORKFLOW" in errors["steps[2].type"][0]


def test_templates_that_do_not_parse_are_reported_with_their_line() -> None:
    errors = validate_definition([prompt_step(config={"template": "ok\n{{ input.who ", "model": ECHO})], WHO)
    assert errors["steps[0].config.template"][0].startswith("Line 2:")


def test_condition_expression_must_parse() -> None:
    errors = validate_definition([condition("c", 0, expression="input.who ==")], WHO)
    assert "does not parse" in errors["steps[0].config.expression"][0]


def test_condition_targets_must_exist_and_come_later() -> None:
    steps = [transform("first", 0), condition("c", 1, if_true="skip_to:first", if_false="skip_to:nowhere"), transform("last", 2)]
    errors = validate_definition(steps, [])
    assert "can only skip forward" in errors["steps[1].config.if_true"][0]
    assert "later steps: last" in errors["steps[1].config.if_false"][0]


def test_condition_branch_must_be_a_known_action() -> None:
    errors = validate_definition([condition("c", 0, if_true="jump")], [])
    assert 'is not "continue", "stop" or "skip_to:<step name>"' in errors["steps[0].config.if_true"][0]


@pytest.mark.parametrize(
    ("on_error", "fragment"),
    [("ignore", "not understood"), ("skip_to:ask", "only skip forward"), ("skip_to:ghost", "not a step")],
)
def test_on_error_must_be_fail_continue_or_a_forward_skip(on_error: str, fragment: str) -> None:
    errors = validate_definition([prompt_step(on_error=on_error)], WHO)
    assert fragment in errors["steps[0].on_error"][0]


def test_retry_config_problems_are_reported() -> None:
    errors = validate_definition([prompt_step(retry_config={"max_retries": -1, "retry_on": ["always"]})], WHO)
    assert len(errors["steps[0].retry_config"]) == 2


def test_prompt_step_needs_a_template_and_a_model() -> None:
    errors = validate_definition([{"name": "p", "order": 0, "type": "PROMPT", "config": {}}], [])
    assert set(errors) == {"steps[0].config.template", "steps[0].config.model"}


def test_prompt_step_may_take_template_and_model_from_a_linked_prompt() -> None:
    linked = {"id": 3, "name": "p", "template": "Hi", "system": "", "model_config": ECHO}
    assert validate_definition([{"name": "p", "order": 0, "type": "PROMPT", "config": {}, "prompt": linked}], []) == {}
    # Given only by id (the API resolves it), the prompt may carry both.
    assert validate_definition([{"name": "p", "order": 0, "type": "PROMPT", "config": {}, "prompt": 3}], []) == {}


def test_linked_prompt_template_is_checked_too() -> None:
    linked = {"template": "{% if %}", "model_config": ECHO}
    errors = validate_definition([{"name": "p", "order": 0, "type": "PROMPT", "config": {}, "prompt": linked}], [])
    assert list(errors) == ["steps[0].prompt.template"]


def test_multi_model_steps_are_refused_until_the_feature_exists() -> None:
    errors = validate_definition([prompt_step(config={"template": "x", "models": [ECHO, ECHO]})], [])
    assert "workflow.multiModel" in errors["steps[0].config.models"][0]


def test_model_needs_provider_and_model_names() -> None:
    errors = validate_definition([prompt_step(config={"template": "x", "model": {"provider": "echo"}})], [])
    assert '"model" name' in errors["steps[0].config.model"][0]


def test_unknown_config_keys_are_reported_so_typos_do_not_change_behaviour() -> None:
    errors = validate_definition([condition("c", 0, if_ture="stop")], [])
    assert "Unknown key(s) if_ture" in errors["steps[0].config"][0]


def test_output_format_must_be_text_or_json() -> None:
    errors = validate_definition([transform("t", 0, config={"template": "x", "output_format": "yaml"})], [])
    assert errors == {"steps[0].config.output_format": ['must be "text" or "json", not \'yaml\'.']}


def test_timeout_must_be_positive() -> None:
    assert list(validate_definition([transform("t", 0, timeout_seconds=0)], [])) == ["steps[0].timeout_seconds"]


def test_handlers_validate_config_returns_flat_messages() -> None:
    messages = get_handler("CONDITION").validate_config({"name": "c", "order": 0, "config": {}}, {"c": 0})
    assert messages == ["config.expression: is required: a Jinja2 expression such as input.score > 3."]
