"""TRANSFORM: render a template into the step output (text, or JSON checked against
``output_schema`` when set); no model call."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError, EngineError
from ..templating import render, template_limits
from ..types import ProviderResolver, RunContext, StepDefinition, StepResult
from .base import (
    BaseStepHandler,
    ConfigErrors,
    check_output_format,
    check_output_schema,
    check_template,
    completed,
    config_of,
    failed,
    step_output,
)
from .registry import register


@register("TRANSFORM")
class TransformStep(BaseStepHandler):
    config_keys = frozenset({"template", "output_format", "output_schema"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        step_input: dict[str, Any] = {"template_rendered": None}
        try:
            template = step.config.get("template")
            if not isinstance(template, str) or template == "":
                raise ConfigError("The transform has no template: set config.template.")
            rendered = render(template, context.as_template_context(), **template_limits(limits))
            step_input["template_rendered"] = rendered
            output = step_output(rendered, step.config)
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        return completed(output, input=step_input)

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        check_template(errors, "config.template", config.get("template"), required=True)
        check_output_format(errors, config)
        check_output_schema(errors, config, step_dict.get("name"))
        return errors
