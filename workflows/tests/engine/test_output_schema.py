"""output_schema on PROMPT and TRANSFORM (workflows/engine/output_schema.py): the schema is
checked when saved, every answer when run; a mismatch is InvalidOutput naming the path."""
from __future__ import annotations

import json

import pytest

from workflows.engine.retry import INVALID_OUTPUT, retry_delay
from workflows.engine.runner import run_step, validate_definition
from workflows.engine.types import COMPLETED, FAILED

from .helpers import ECHO, ScriptedAdapter, make_context, make_step

PRICES = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}}},
    "required": ["items"],
}


def _prompt(**config) -> dict:
    return {"name": "extract", "order": 0, "type": "PROMPT",
            "config": {"template": "Prices please", "model": ECHO, **config}}


def _transform(template: str, **config) -> dict:
    return {"name": "shape", "order": 0, "type": "TRANSFORM", "config": {"template": template, **config}}


@pytest.mark.parametrize("build", [_prompt, lambda **c: _transform("{}", **c)], ids=["PROMPT", "TRANSFORM"])
def test_an_invalid_schema_is_refused_at_save_time_naming_where_in_it(build) -> None:
    errors = validate_definition([build(output_schema={"type": "object", "properties": {"n": {"minimum": "zero"}}})], [])

    [message] = errors["steps[0].config.output_schema"]
    assert "not a valid JSON Schema" in message
    assert "$.properties.n.minimum" in message


def test_a_schema_must_be_an_object_and_goes_with_json_output() -> None:
    assert "must be a JSON Schema object" in validate_definition([_prompt(output_schema="object")], [])[
        "steps[0].config.output_schema"][0]
    errors = validate_definition([_prompt(output_schema=PRICES, output_format="text")], [])
    assert 'must be "json"' in errors["steps[0].config.output_format"][0]


def test_a_valid_schema_saves_and_implies_json_output() -> None:
    assert validate_definition([_prompt(output_schema=PRICES)], []) == {}
    assert validate_definition([_transform("{}", output_schema=PRICES, output_format="json")], []) == {}


def test_a_matching_prompt_answer_is_the_parsed_json_and_the_schema_reaches_the_provider() -> None:
    adapter = ScriptedAdapter(json.dumps({"items": [{"price": 2.5}]}))

    result = run_step(make_step("extract", 0, "PROMPT", config=_prompt(output_schema=PRICES)["config"]),
                      make_context(), providers=adapter.resolver)

    assert result.status == COMPLETED, result.error
    assert result.output == {"items": [{"price": 2.5}]}
    assert adapter.requests[0].output_schema == PRICES


def test_a_mismatching_answer_is_invalid_output_naming_the_failing_path() -> None:
    adapter = ScriptedAdapter(json.dumps({"items": [{"price": 1}, {"price": 2}, {"price": "cheap"}]}))

    result = run_step(make_step("extract", 0, "PROMPT", config=_prompt(output_schema=PRICES)["config"]),
                      make_context(), providers=adapter.resolver)

    assert result.status == FAILED
    assert result.error["type"] == "InvalidOutput"
    assert result.error["details"]["path"] == "$.items[2].price"
    assert result.error["details"]["errors"][0]["path"] == "$.items[2].price"
    assert "output_schema at $.items[2].price" in result.error["message"]


def test_a_missing_required_key_names_the_object_that_lacks_it() -> None:
    adapter = ScriptedAdapter(json.dumps({"items": [{"price": 1}, {}]}))

    result = run_step(make_step("extract", 0, "PROMPT", config=_prompt(output_schema=PRICES)["config"]),
                      make_context(), providers=adapter.resolver)

    assert result.error["details"]["path"] == "$.items[1]"
    assert "'price' is a required property" in result.error["message"]


def test_transform_output_is_checked_against_its_schema() -> None:
    good = run_step(make_step("shape", 0, config=_transform('{"items": [{"price": {{ input.p }}}]}',
                                                            output_schema=PRICES)["config"]),
                    make_context({"p": 4}), providers=ScriptedAdapter().resolver)
    bad = run_step(make_step("shape", 0, config=_transform('{"items": {{ input.p }}}', output_schema=PRICES)["config"]),
                   make_context({"p": 4}), providers=ScriptedAdapter().resolver)

    assert good.status == COMPLETED and good.output == {"items": [{"price": 4}]}
    assert bad.status == FAILED and bad.error["details"]["path"] == "$.items"


def test_schema_failures_are_retried_only_when_retry_on_lists_invalid_output() -> None:
    adapter = ScriptedAdapter(json.dumps({"items": "none"}))
    result = run_step(make_step("extract", 0, "PROMPT", config=_prompt(output_schema=PRICES)["config"]),
                      make_context(), providers=adapter.resolver)

    assert retry_delay({"max_retries": 2, "retry_on": [INVALID_OUTPUT]}, retry_count=0, result=result) is not None
    assert retry_delay({"max_retries": 2, "retry_on": ["transient"]}, retry_count=0, result=result) is None
