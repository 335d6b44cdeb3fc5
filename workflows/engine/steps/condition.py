"""CONDITION: evaluate an expression and continue, stop or jump forward."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError, EngineError
from ..templating import evaluate_expression, template_limits
from ..types import NextAction, ProviderResolver, RunContext, StepDefinition, StepResult
from .base import (
    BaseStepHandler,
    ConfigErrors,
    check_expression,
    check_next_action,
    completed,
    config_of,
    failed,
    json_safe,
)
from .registry import register

DEFAULT_IF_TRUE = "continue"
DEFAULT_IF_FALSE = "stop"


@register("CONDITION")
class ConditionStep(BaseStepHandler):
    config_keys = frozenset({"expression", "if_true", "if_false"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        expression = step.config.get("expression")
        step_input: dict[str, Any] = {"expression": expression, "value": None}
        try:
            if not isinstance(expression, str) or not expression.strip():
                raise ConfigError("The condition has no expression: set config.expression, e.g. input.score > 3.")
            value = evaluate_expression(expression, context.as_template_context(), **template_limits(limits))
            step_input["value"] = json_safe(value)
            passed = bool(value)
            branch = step.config.get("if_true", DEFAULT_IF_TRUE) if passed else step.config.get("if_false", DEFAULT_IF_FALSE)
            try:
                action = NextAction.parse(branch)
            except (ValueError, TypeError, AttributeError) as exc:
                field = "if_true" if passed else "if_false"
                raise ConfigError(f"config.{field}: {exc}") from None
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        return completed(passed, input=step_input, next=action)

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        check_expression(errors, "config.expression", config.get("expression"))
        for field, default in (("if_true", DEFAULT_IF_TRUE), ("if_false", DEFAULT_IF_FALSE)):
            check_next_action(
                errors,
                f"config.{field}",
                config.get(field, default),
                step_order=step_dict.get("order"),
                names_by_order=all_step_names_by_order,
            )
        return errors
