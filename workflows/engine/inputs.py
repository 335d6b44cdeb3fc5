"""Checking run inputs against a workflow's variables.

Policy (documented in docs/WORKFLOW_ENGINE.md, "Input validation"):
- ``null`` and an absent key mean the same thing: "not given";
- not given -> the variable's ``default`` if it has one (even when ``required``), else
  an error if ``required``, else ``None`` so templates can test ``{% if input.x %}``;
- types are strict, nothing is coerced (``"42"`` is not a NUMBER);
- keys that are not variables are rejected, naming them: a typo should not silently
  drop a value;
- every offending variable is reported at once.
"""
from __future__ import annotations

import copy
import math
import sys
from typing import Any

from .errors import InputValidationError

STRING = "STRING"
NUMBER = "NUMBER"
BOOLEAN = "BOOLEAN"
JSON = "JSON"
VARIABLE_TYPES = (STRING, NUMBER, BOOLEAN, JSON)


def describe(value: Any) -> str:
    """The JSON name of a value's type, for messages a builder understands."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def is_json_value(value: Any) -> bool:
    """True for values JSON can carry (finite numbers, string keys), checked without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        else:
            return False
    return True


def _fits_float(value: int) -> bool:
    # Templates, comparisons and JSON clients treat numbers as floats: an integer no
    # float can hold is unusable input (and math.isfinite raises OverflowError on it).
    try:
        float(value)
    except OverflowError:
        return False
    return True


def type_error(var_type: str, value: Any) -> str | None:
    """Why ``value`` does not fit ``var_type``, or None when it does."""
    if var_type == STRING:
        ok, expected = isinstance(value, str), "a string"
    elif var_type == NUMBER:
        if isinstance(value, int) and not isinstance(value, bool) and not _fits_float(value):
            return f"must be a number between -{sys.float_info.max:.3g} and {sys.float_info.max:.3g}, got an " \
                   f"integer of about {int(value.bit_length() * math.log10(2)) + 1} digits."
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a number"
    elif var_type == BOOLEAN:
        ok, expected = isinstance(value, bool), "true or false"
    elif var_type == JSON:
        ok, expected = is_json_value(value), "a JSON value"
    else:
        return f'has an unknown type "{var_type}" (use one of {", ".join(VARIABLE_TYPES)}).'
    return None if ok else f"must be {expected}, got {describe(value)}."


def validate_inputs(variables: list[dict[str, Any]], raw: Any) -> dict[str, Any]:
    """The validated inputs, defaults applied. Raises InputValidationError naming every offender."""
    if not isinstance(raw, dict):
        raise InputValidationError(
            {"input": f"must be a JSON object mapping variable names to values, got {describe(raw)}."}
        )
    names = [variable["name"] for variable in variables]
    errors: dict[str, str] = {}
    for key in raw:
        if key not in names:
            known = ", ".join(names) or "none"
            errors[str(key)] = f"is not a variable of this workflow (variables: {known}). Check the spelling."
    values: dict[str, Any] = {}
    for variable in variables:
        name = variable["name"]
        value = raw.get(name)
        if value is None:
            default = variable.get("default")
            if default is not None:
                values[name] = copy.deepcopy(default)  # never share the definition's object
            elif variable.get("required", True):
                errors[name] = f"is required ({variable.get('type', STRING).lower()})."
            else:
                values[name] = None
            continue
        problem = type_error(variable.get("type", STRING), value)
        if problem:
            errors[name] = problem
        else:
            values[name] = value
    if errors:
        raise InputValidationError(errors)
    return values


def sample_inputs(variables: list[dict[str, Any]]) -> dict[str, Any]:
    """Inputs for previews and demos: each variable's ``sample``, else its ``default``.

    Variables with neither are left out, so validation then names them as required.
    """
    samples: dict[str, Any] = {}
    for variable in variables:
        value = variable.get("sample")
        if value is None:
            value = variable.get("default")
        if value is not None:
            samples[variable["name"]] = copy.deepcopy(value)
    return samples
