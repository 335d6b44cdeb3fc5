"""The step handler contract and the helpers every step type shares."""
from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Protocol

from ..errors import InvalidOutput, error_payload, is_retryable, retry_after_of
from ..output_schema import check_output, schema_problem
from ..templating import validate_expression, validate_template
from ..types import COMPLETED, FAILED, NextAction, ProviderResolver, RunContext, StepDefinition, StepResult

OUTPUT_FORMATS = ("text", "json")
# Free text builders may keep on any step; never read by the engine.
COMMON_CONFIG_KEYS = frozenset({"default_output", "description"})
SNIPPET_CHARS = 500


class StepHandler(Protocol):
    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        """Run one attempt. Failures come back as FAILED results, not exceptions."""
        ...

    def validate_config(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> list[str]:
        """Human messages for what is wrong with this step's definition; empty when valid."""
        ...


ConfigErrors = dict[str, list[str]]  # "config.expression" -> messages


class BaseStepHandler:
    """Implements ``validate_config`` on top of ``config_errors``, which keys each
    message by the field to change so the API can point at it."""

    step_type: ClassVar[str] = ""
    config_keys: ClassVar[frozenset[str]] = frozenset()

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        raise NotImplementedError

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        raise NotImplementedError

    def validate_config(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> list[str]:
        errors = self.config_errors(step_dict, all_step_names_by_order)
        return [f"{field}: {message}" for field, messages in errors.items() for message in messages]

    def unknown_key_errors(self, config: dict[str, Any], errors: ConfigErrors) -> None:
        unknown = sorted(set(config) - self.config_keys - COMMON_CONFIG_KEYS)
        if unknown:
            known = ", ".join(sorted(self.config_keys | COMMON_CONFIG_KEYS))
            add_error(errors, "config", f"Unknown key(s) {', '.join(unknown)} for a {self.step_type} step; known keys: {known}.")


def add_error(errors: ConfigErrors, field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def config_of(step_dict: dict[str, Any], errors: ConfigErrors) -> dict[str, Any]:
    config = step_dict.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        add_error(errors, "config", "must be an object.")
        return {}
    return config


def check_template(errors: ConfigErrors, field: str, source: Any, *, required: bool) -> None:
    if source is None or source == "":
        if required:
            add_error(errors, field, "is required.")
        return
    if not isinstance(source, str):
        add_error(errors, field, "must be a string (a Jinja2 template).")
        return
    problem = validate_template(source)
    if problem:
        add_error(errors, field, problem)


def check_expression(errors: ConfigErrors, field: str, source: Any) -> None:
    if not isinstance(source, str) or not source.strip():
        add_error(errors, field, 'is required: a Jinja2 expression such as input.score > 3.')
        return
    problem = validate_expression(source)
    if problem:
        add_error(errors, field, problem)


def check_output_format(errors: ConfigErrors, config: dict[str, Any]) -> None:
    if config.get("output_format", "text") not in OUTPUT_FORMATS:
        add_error(errors, "config.output_format", f'must be "text" or "json", not {config.get("output_format")!r}.')


def check_output_schema(errors: ConfigErrors, config: dict[str, Any], step_name: Any = None) -> None:
    """``output_schema``, when set, is a valid JSON Schema and goes with JSON output."""
    if config.get("output_schema") is None:
        return
    problem = schema_problem(config["output_schema"])
    if problem:
        label = f'Step "{step_name}": ' if isinstance(step_name, str) and step_name else ""
        add_error(errors, "config.output_schema", f"{label}output_schema {problem}")
    if config.get("output_format", "json") != "json":
        add_error(errors, "config.output_format",
                  'must be "json" (or left out) when output_schema is set: the schema checks the parsed JSON.')


def output_format_of(config: dict[str, Any]) -> str:
    """``output_format``; JSON when left out but an ``output_schema`` is set."""
    return config.get("output_format") or ("json" if config.get("output_schema") is not None else "text")


def step_output(text: str, config: dict[str, Any]) -> Any:
    """The step output for an answer: parsed per ``output_format``, then checked against
    ``output_schema`` when there is one. Either failing is InvalidOutput."""
    output = parse_output(text, output_format_of(config))
    if config.get("output_schema") is not None:
        check_output(output, config["output_schema"])
    return output


def check_next_action(
    errors: ConfigErrors, field: str, text: Any, *, step_order: Any, names_by_order: dict[str, int]
) -> None:
    """``continue``, ``stop`` or ``skip_to:<a later step>``; shared by conditions and on_error."""
    if not isinstance(text, str):
        add_error(errors, field, 'must be a string: "continue", "stop" or "skip_to:<step name>".')
        return
    try:
        action = NextAction.parse(text)
    except ValueError as exc:
        add_error(errors, field, str(exc))
        return
    if action.kind != "skip_to":
        return
    if action.target not in names_by_order:
        later = [name for name, order in names_by_order.items() if isinstance(step_order, int) and order > step_order]
        hint = f"later steps: {', '.join(later)}" if later else "no step comes after this one"
        add_error(errors, field, f'skips to "{action.target}", which is not a step of this workflow ({hint}).')
    elif isinstance(step_order, int) and names_by_order[action.target] <= step_order:
        add_error(errors, field, f'can only skip forward: "{action.target}" does not come after this step.')


def parse_output(text: str, output_format: str) -> Any:
    """The step output for ``output_format``; JSON that does not parse is InvalidOutput."""
    if output_format != "json":
        return text
    candidate = _strip_code_fence(text)
    try:
        return json.loads(candidate)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidOutput(
            f"The output is not valid JSON ({getattr(exc, 'msg', exc)}). Ask for JSON only, or use output_format \"text\".",
            details={"snippet": text[:SNIPPET_CHARS] if isinstance(text, str) else repr(text)[:SNIPPET_CHARS]},
        ) from None


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def _strip_code_fence(text: str) -> str:
    # Models often wrap JSON in a Markdown fence even when told not to.
    match = _FENCE.match(text) if isinstance(text, str) else None
    return match.group(1) if match else text


def json_safe(value: Any) -> Any:
    """``value`` if JSON can store it, else its repr (so step inputs always save)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)[:SNIPPET_CHARS]
    return value


def completed(output: Any, **fields: Any) -> StepResult:
    return StepResult(status=COMPLETED, output=output, **fields)


def failed(step: StepDefinition, exc: BaseException, **fields: Any) -> StepResult:
    """A FAILED result for an engine or provider error, keeping its retry hints."""
    return StepResult(
        status=FAILED,
        error=error_payload(exc, step.name),
        retryable=is_retryable(exc),
        retry_after=retry_after_of(exc),
        **fields,
    )

