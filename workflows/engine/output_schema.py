"""``output_schema``: a JSON Schema a step's parsed answer must match.

Checked with the ``jsonschema`` library twice: the schema itself when a definition is
saved (``schema_problem``), and every answer when a step runs (``check_output``). The
draft is the schema's ``$schema`` when it names one, else the latest (2020-12). Remote
``$ref``s are never fetched: ``jsonschema`` resolves only what the schema itself holds.
"""
from __future__ import annotations

from typing import Any

from jsonschema import exceptions, validators

from .errors import InvalidOutput

MAX_LISTED_ERRORS = 5
MAX_MESSAGE_CHARS = 300
SCHEMA_EXAMPLE = '{"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}'


def schema_problem(schema: Any) -> str | None:
    """What is wrong with ``schema`` as a JSON Schema, naming where in it; None when valid."""
    if not isinstance(schema, dict):
        return f"must be a JSON Schema object, e.g. {SCHEMA_EXAMPLE}."
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"is not a valid JSON Schema: {_short(exc.message)} (at {exc.json_path} in the schema)."
    return None


def check_output(value: Any, schema: dict[str, Any]) -> None:
    """Raise ``InvalidOutput`` naming the failing JSON path (``$.items[2].price``) when
    ``value`` does not match ``schema``."""
    validator = validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=exceptions.relevance)
    if not errors:
        return
    best = exceptions.best_match(errors)
    listed = [{"path": error.json_path, "message": _short(error.message)} for error in errors[:MAX_LISTED_ERRORS]]
    raise InvalidOutput(
        f"The output does not match output_schema at {best.json_path}: {_short(best.message)}.",
        details={"path": best.json_path, "errors": listed, "error_count": len(errors)},
    )


def _short(message: str) -> str:
    # Messages quote the offending value, which may be a whole model answer.
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
