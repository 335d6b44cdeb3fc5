"""PROMPT: render a template, call one model (or several), keep the answer (text or parsed JSON).

One model (``config.model``, a one-entry ``config.models``, or the linked prompt's) is
one ``complete`` call, as it always was. Several (``config.models`` with ``mode``
``parallel``, ``fallback`` or ``race``) go through ``providers.dispatcher``, and only
while the ``workflow.multiModel`` switch is on: the engine is handed the switches that
are on as ``limits["features"]`` (runs) or ``validate_definition(features=...)``.
"""
from __future__ import annotations

import time
from collections.abc import Container
from typing import Any

from providers.dispatcher import DEFAULT_MODE, MAX_MODELS, MODES, DispatchResult, dispatch
from providers.errors import ProviderError
from providers.flags import ADMIN_PATH, MULTI_MODEL
from providers.types import DEFAULT_TIMEOUT_SECONDS, ModelRequest, TokenUsage

from ..errors import ConfigError, EngineError, error_payload
from ..templating import render, template_limits
from ..types import FAILED, ProviderResolver, RunContext, StepDefinition, StepResult
from .base import (
    BaseStepHandler,
    ConfigErrors,
    add_error,
    check_output_format,
    check_output_schema,
    check_template,
    completed,
    config_of,
    failed,
    step_output,
)
from .registry import register

MULTI_MODEL_FLAG = MULTI_MODEL
MULTI_MODEL_MESSAGE = (
    f"Steps with more than one model need the {MULTI_MODEL_FLAG} switch, which is off. "
    f"Staff turn it on in {ADMIN_PATH} → {MULTI_MODEL_FLAG}; until then keep a single model "
    "(config.model, or one entry in config.models)."
)
MODEL_EXAMPLE = '{"provider": "echo", "model": "echo"}'
MODELS_EXAMPLE = '[{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "anthropic", "model": "claude-sonnet-4-5"}]'
FEATURES = "features"  # the limits key under which the orchestrator passes the switches that are on


def resolve_models(config: dict[str, Any], prompt: dict[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """The step's models and mode: ``config.models`` (with ``config.mode``), else the one
    model of ``config.model`` or of the linked prompt."""
    models = config.get("models")
    if models is None:
        return [resolve_model(config, prompt)], DEFAULT_MODE
    problem = models_problem(models, config.get("mode", DEFAULT_MODE))
    if problem:
        field, message = problem
        raise ConfigError(f"{field} {message}")
    return [dict(model) for model in models], config.get("mode", DEFAULT_MODE)


def resolve_model(config: dict[str, Any], prompt: dict[str, Any] | None) -> dict[str, Any]:
    """The step's one model when it has no ``config.models``: ``config.model``, or the prompt's."""
    model = config.get("model") or (prompt or {}).get("model_config")
    problem = model_problem(model)
    if problem:
        raise ConfigError(f"The step's model {problem}")
    return dict(model)


def models_problem(models: Any, mode: Any) -> tuple[str, str] | None:
    """(field, message) for the first thing wrong with ``config.models`` / ``config.mode``."""
    if not isinstance(models, list) or not models:
        return "config.models", f"must be a non-empty list of models, e.g. {MODELS_EXAMPLE}."
    if len(models) > MAX_MODELS:
        return "config.models", f"lists {len(models)} models; at most {MAX_MODELS} are allowed in one step."
    for index, model in enumerate(models):
        if problem := model_problem(model):
            return f"config.models[{index}]", problem
    if mode not in MODES:
        return "config.mode", f'must be one of {", ".join(MODES)} (default {DEFAULT_MODE}), not {mode!r}.'
    return None


def model_problem(model: Any) -> str | None:
    if not model:
        return f"is missing: set config.model, e.g. {MODEL_EXAMPLE}, or link a prompt that has a model."
    if not isinstance(model, dict):
        return f"must be an object such as {MODEL_EXAMPLE}."
    for key in ("provider", "model"):
        if not isinstance(model.get(key), str) or not model[key].strip():
            return f'needs a "{key}" name, e.g. {MODEL_EXAMPLE}.'
    return None


def _model_output(model: dict[str, Any], **fields: Any) -> dict[str, Any]:
    record = {
        "provider": model["provider"],
        "model": model["model"],
        "status": "ok",
        "content": None,
        "tokens": TokenUsage().as_dict(),
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
    config_keys = frozenset({"template", "system", "model", "models", "mode", "output_format", "output_schema"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        prompt = step.prompt or {}
        step_input: dict[str, Any] = {"prompt": None, "system": None, "model": None, "variables": context.inputs}
        try:
            models, mode = resolve_models(step.config, prompt)
            multi = len(models) > 1
            if multi and MULTI_MODEL_FLAG not in (limits.get(FEATURES) or frozenset()):
                raise ConfigError(MULTI_MODEL_MESSAGE, details={"flag": MULTI_MODEL_FLAG, "where": ADMIN_PATH})
            if multi:
                step_input.update(model=None, models=models, mode=mode)
            else:
                step_input["model"] = model = models[0]
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
        if multi:
            return self._call_models(step, models, mode, step_input, providers)
        return self._call_model(step, model, step_input, providers)

    def _call_models(
        self, step: StepDefinition, models: list[dict[str, Any]], mode: str, step_input: dict[str, Any],
        providers: ProviderResolver,
    ) -> StepResult:
        outcome = dispatch(
            models,
            mode,
            prompt=step_input["prompt"],
            system=step_input["system"],
            timeout_seconds=float(step.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
            resolver=providers,
            output_schema=step.config.get("output_schema"),
            # An answer that does not parse (or match output_schema) counts as that model
            # failing: the next one is used.
            accept=lambda content: step_output(content, step.config),
        )
        return multi_model_result(step, outcome, step_input)

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
            output_schema=step.config.get("output_schema"),  # adapters ask for it natively
        )
        started = time.monotonic()
        try:
            response = providers(model["provider"]).complete(request)
        except ProviderError as exc:
            latency_ms = int((time.monotonic() - started) * 1000)
            record = _model_output(model, status="error", latency_ms=latency_ms, error=error_payload(exc, step.name))
            return failed(step, exc, input=step_input, model_outputs=[record])
        tokens = TokenUsage.from_raw(response.tokens).as_dict()
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
            output = step_output(response.content, step.config)
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
        check_output_schema(errors, config, step_dict.get("name"))
        self._model_errors(config, prompt, has_prompt, errors)
        return errors

    def _model_errors(
        self, config: dict[str, Any], prompt: dict[str, Any] | None, has_prompt: bool, errors: ConfigErrors
    ) -> None:
        if "model" in config and "models" in config:
            add_error(errors, "config", "Set config.model or config.models, not both.")
            return
        if "models" in config:
            # Checked whatever the switch says; feature_errors adds the switch's verdict.
            if problem := models_problem(config["models"], config.get("mode", DEFAULT_MODE)):
                add_error(errors, *problem)
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

    def feature_errors(self, step_dict: dict[str, Any], features: Container[str]) -> ConfigErrors:
        """What the switches that are off forbid: several models without ``workflow.multiModel``."""
        config = step_dict.get("config")
        models = config.get("models") if isinstance(config, dict) else None
        if isinstance(models, list) and len(models) > 1 and MULTI_MODEL_FLAG not in features:
            return {"config.models": [MULTI_MODEL_MESSAGE]}
        return {}


def multi_model_result(step: StepDefinition, outcome: DispatchResult, step_input: dict[str, Any]) -> StepResult:
    """The step's result from a dispatch: the chosen output, every model's output, all
    the tokens spent, and a warning per failed model."""
    for record in outcome.model_outputs:
        if record["error"] is not None:
            record["error"]["step"] = step.name
    fields: dict[str, Any] = {
        "input": step_input,
        "outputs": outcome.outputs,
        "model_outputs": outcome.model_outputs,
        "tokens": dict(outcome.tokens),
        "warnings": list(outcome.warnings),
    }
    if outcome.ok:
        return completed(outcome.output, **fields)
    error = dict(outcome.error or {})
    error["step"] = step.name
    return StepResult(
        status=FAILED, error=error, retryable=outcome.retryable, retry_after=outcome.retry_after, **fields
    )
