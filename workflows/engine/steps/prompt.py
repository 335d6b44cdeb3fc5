"""PROMPT: render a template, call one model, keep its answer (text or parsed JSON)."""
from __future__ import annotations

import time
from typing import Any

from providers.errors import ProviderError
from providers.types import DEFAULT_TIMEOUT_SECONDS, ModelRequest, ModelResponse

from ..errors import ConfigError, EngineError, error_payload
from ..templating import render, template_limits
from ..types import ProviderResolver, RunContext, StepDefinition, StepResult
from .base import (
    BaseStepHandler,
    ConfigErrors,
    add_error,
    check_output_format,
    check_template,
    completed,
    config_of,
    failed,
    parse_output,
)
from .registry import register

MULTI_MODEL_FLAG = "workflow.multiModel"
MULTI_MODEL_MESSAGE = (
    f"Steps with more than one model need the {MULTI_MODEL_FLAG} feature, which is not available yet. "
    "Keep a single entry in config.models, or use config.model."
)
MODEL_EXAMPLE = '{"provider": "echo", "model": "echo"}'


def resolve_model(config: dict[str, Any], prompt: dict[str, Any] | None) -> dict[str, Any]:
    """The step's model: ``config.model``, a single-entry ``config.models``, or the prompt's."""
    models = config.get("models")
    if models is not None:
        if not isinstance(models, list) or not models:
            raise ConfigError(f"config.models must be a list with one model, e.g. [{MODEL_EXAMPLE}].")
        if len(models) > 1:
            raise ConfigError(MULTI_MODEL_MESSAGE, details={"flag": MULTI_MODEL_FLAG})
        model = models[0]
    else:
        model = config.get("model") or (prompt or {}).get("model_config")
    problem = model_problem(model)
    if problem:
        raise ConfigError(f"The step's model {problem}")
    return dict(model)


def model_problem(model: Any) -> str | None:
    if not model:
        return f"is missing: set config.model, e.g. {MODEL_EXAMPLE}, or link a prompt that has a model."
    if not isinstance(model, dict):
        return f"must be an object such as {MODEL_EXAMPLE}."
    for key in ("provider", "model"):
        if not isinstance(model.get(key), str) or not model[key].strip():
            return f'needs a "{key}" name, e.g. {MODEL_EXAMPLE}.'
    return None


def _tokens(response: ModelResponse) -> dict[str, int]:
    reported = response.tokens or {}
    used_in, used_out = int(reported.get("input") or 0), int(reported.get("output") or 0)
    return {"input": used_in, "output": used_out, "total": int(reported.get("total") or used_in + used_out)}


def _model_output(model: dict[str, Any], **fields: Any) -> dict[str, Any]:
    record = {
        "provider": model["provider"],
        "model": model["model"],
        "status": "ok",
        "content": None,
        "tokens": {"input": 0, "output": 0, "total": 0},
        "latency_ms": 0,
        "retries": 0,
        "error": None,
        "warnings": [],
        "finish_reason": None,
        "request_id": None,
    }
    record.update(fields)
    return record


@register("PROMPT")
class PromptStep(BaseStepHandler):
    config_keys = frozenset({"template", "system", "model", "models", "mode", "output_format"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        prompt = step.prompt or {}
        step_input: dict[str, Any] = {"prompt": None, "system": None, "model": None, "variables": context.inputs}
        try:
            model = resolve_model(step.config, prompt)
            step_input["model"] = model
            template = step.config.get("template") or prompt.get("template")
            if not template:
                raise ConfigError("The step has no template: set config.template or link a prompt.")
            system_source = step.config.get("system") or prompt.get("system") or None
            variables = context.as_template_context()
            step_input["prompt"] = render(template, variables, **template_limits(limits))
            if system_source:
                step_input["system"] = render(system_source, variables, **template_limits(limits))
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        return self._call_model(step, model, step_input, providers)

    def _call_model(
        self, step: StepDefinition, model: dict[str, Any], step_input: dict[str, Any], providers: ProviderResolver
    ) -> StepResult:
        params = {key: value for key, value in model.items() if key not in ("provider", "model")}
        request = ModelRequest(
            provider=model["provider"],
            model=model["model"],
            prompt=step_input["prompt"],
            system=step_input["system"],
            params=params,
            timeout_seconds=float(step.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
        )
        started = time.monotonic()
        try:
            response = providers(model["provider"]).complete(request)
        except ProviderError as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            record = _model_output(model, status="error", latency_ms=latency_ms, error=error_payload(exc, step.name))
            return failed(step, exc, input=step_input, model_outputs=[record])
        tokens = _tokens(response)
        record = _model_output(
            model,
            content=response.content,
            tokens=tokens,
            latency_ms=response.latency_ms,
            retries=response.retries,
            warnings=list(response.warnings),
            finish_reason=response.finish_reason,
            request_id=response.request_id,
        )
        fields = {"input": step_input, "model_outputs": [record], "tokens": dict(tokens), "warnings": list(response.warnings)}
        try:
            output = parse_output(response.content, step.config.get("output_format", "text"))
        except EngineError as exc:
            # The call itself worked (status "ok", tokens spent); its answer is unusable.
            return failed(step, exc, **fields)
        return completed(output, **fields)

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        prompt = step_dict.get("prompt")
        has_prompt = prompt is not None or step_dict.get("prompt_id") is not None
        prompt = prompt if isinstance(prompt, dict) else None  # an id: the API checks it exists
        check_template(errors, "config.template", config.get("template"), required=not has_prompt)
        check_template(errors, "config.system", config.get("system"), required=False)
        if prompt is not None and not config.get("template"):
            check_template(errors, "prompt.template", prompt.get("template"), required=True)
        check_output_format(errors, config)
        self._model_errors(config, prompt, has_prompt, errors)
        return errors

    def _model_errors(
        self, config: dict[str, Any], prompt: dict[str, Any] | None, has_prompt: bool, errors: ConfigErrors
    ) -> None:
        if "model" in config and "models" in config:
            add_error(errors, "config", "Set config.model or config.models, not both.")
            return
        if "models" in config:
            models = config["models"]
            if not isinstance(models, list) or not models:
                add_error(errors, "config.models", f"must be a list with one model, e.g. [{MODEL_EXAMPLE}].")
            elif len(models) > 1:
                add_error(errors, "config.models", MULTI_MODEL_MESSAGE)
            elif problem := model_problem(models[0]):
                add_error(errors, "config.models[0]", problem)
            return
        if "mode" in config:
            add_error(errors, "config.mode", "only applies to config.models.")
        if config.get("model") is not None:
            if problem := model_problem(config["model"]):
                add_error(errors, "config.model", problem)
        elif prompt is not None and prompt.get("model_config"):
            if problem := model_problem(prompt["model_config"]):
                add_error(errors, "prompt.model_config", problem)
        elif not has_prompt or prompt is not None:
            # A prompt given only by id may carry a model; otherwise one is needed here.
            add_error(errors, "config.model", model_problem(None) or "")
