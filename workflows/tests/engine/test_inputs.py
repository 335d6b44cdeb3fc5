"""workflows/engine/inputs.py: what a run accepts as input."""
from __future__ import annotations

from typing import Any

import pytest

from workflows.engine.errors import InputValidationError
from workflows.engine.inputs import sample_inputs, validate_inputs


def variable(name: str, var_type: str = "STRING", **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": var_type, "required": True, "default": None, "sample": None, **fields}


def errors_for(variables: list[dict[str, Any]], raw: Any) -> dict[str, str]:
    with pytest.raises(InputValidationError) as caught:
        validate_inputs(variables, raw)
    assert caught.value.details == {"errors": caught.value.errors}
    return caught.value.errors


@pytest.mark.parametrize(
    ("var_type", "value"),
    [("STRING", "hi"), ("STRING", ""), ("NUMBER", 3), ("NUMBER", 2.5), ("BOOLEAN", False),
     ("JSON", {"a": [1, None, "x"]}), ("JSON", [1, 2]), ("JSON", "text")],
)
def test_values_of_the_declared_type_are_accepted(var_type: str, value: Any) -> None:
    assert validate_inputs([variable("v", var_type)], {"v": value}) == {"v": value}


@pytest.mark.parametrize(
    ("var_type", "value", "expected"),
    [("STRING", 5, "must be a string, got a number"), ("NUMBER", "42", "must be a number, got a string"),
     ("NUMBER", True, "must be a number, got a boolean"), ("NUMBER", float("nan"), "must be a number"),
     ("BOOLEAN", 1, "must be true or false, got a number"), ("BOOLEAN", "true", "must be true or false"),
     ("JSON", {1: "a"}, "must be a JSON value")],
)
def test_values_of_another_type_are_rejected_without_coercion(var_type: str, value: Any, expected: str) -> None:
    assert expected in errors_for([variable("v", var_type)], {"v": value})["v"]


def test_missing_required_variable_is_named() -> None:
    assert errors_for([variable("topic")], {}) == {"topic": "is required (string)."}


def test_null_counts_as_not_given() -> None:
    assert "topic" in errors_for([variable("topic")], {"topic": None})
    assert validate_inputs([variable("tone", default="warm")], {"tone": None}) == {"tone": "warm"}


def test_default_applies_when_not_given_even_for_required_variables() -> None:
    assert validate_inputs([variable("n", "NUMBER", default=3)], {}) == {"n": 3}


def test_defaults_are_copies_so_a_run_cannot_change_the_definition() -> None:
    variables = [variable("cfg", "JSON", default={"k": [1]})]
    validate_inputs(variables, {})["cfg"]["k"].append(2)
    assert variables[0]["default"] == {"k": [1]}


def test_optional_variable_without_default_is_present_as_none() -> None:
    assert validate_inputs([variable("note", required=False)], {}) == {"note": None}


def test_unknown_keys_are_rejected_so_typos_are_noticed() -> None:
    errors = errors_for([variable("topic")], {"topic": "x", "topc": "y"})
    assert list(errors) == ["topc"]
    assert "not a variable of this workflow (variables: topic)" in errors["topc"]


def test_every_offending_variable_is_reported_at_once() -> None:
    variables = [variable("a"), variable("b", "NUMBER"), variable("c", "BOOLEAN")]
    assert set(errors_for(variables, {"b": "x", "c": "y", "zz": 1})) == {"a", "b", "c", "zz"}


@pytest.mark.parametrize("raw", [None, [1], "text"])
def test_input_that_is_not_an_object_is_rejected(raw: Any) -> None:
    assert "must be a JSON object" in errors_for([variable("a")], raw)["input"]


def test_sample_inputs_prefer_samples_then_defaults_and_leave_the_rest_out() -> None:
    variables = [variable("a", sample="s", default="d"), variable("b", default="d"), variable("c")]
    assert sample_inputs(variables) == {"a": "s", "b": "d"}
