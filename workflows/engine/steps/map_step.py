"""MAP: run one inner step (PROMPT, TRANSFORM or HTTP) once per item of a list.

The engine evaluates ``items`` and says "fan out over these" (``StepResult.fan_out``);
the durable orchestration gives each item a step execution of its own (``item_index``),
run, retried and checkpointed like any step, and completes this step from their results
(``map_result``) once every item is done. In-process runs (previews) call
``run_items`` instead. The inner step's templates also see ``item`` and ``index``.
"""
from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import replace
from typing import Any

from providers.types import TokenUsage

from ..errors import ConfigError, EngineError
from ..retry import validate_retry_config
from ..templating import evaluate_expression, template_limits
from ..types import COMPLETED, FAILED, WAITING, ProviderResolver, RunContext, StepDefinition, StepResult
from .base import BaseStepHandler, ConfigErrors, add_error, check_expression, completed, config_of, failed
from .registry import get_handler, register

INNER_TYPES = ("PROMPT", "TRANSFORM", "HTTP")
DEFAULT_MAX_ITEMS = 1000
MAX_ITEMS_LIMIT = 10_000
DEFAULT_CONCURRENCY = 10
MAX_CONCURRENCY = 1000
ON_ITEM_ERROR = ("fail", "continue", "drop")
INNER_KEYS = frozenset({"type", "config", "retry_config", "timeout_seconds"})


class MapItemsError(EngineError):
    """``items`` did not give a list, or gave more than ``max_items``."""


class ItemFailed(EngineError):
    """An item's inner step failed (``on_item_error`` "fail")."""


def settings_of(step: StepDefinition) -> dict[str, Any]:
    """The MAP knobs with their defaults: max_items, concurrency, on_item_error."""
    config = step.config
    return {
        "max_items": int(config.get("max_items") or DEFAULT_MAX_ITEMS),
        "concurrency": int(config.get("concurrency") or DEFAULT_CONCURRENCY),
        "on_item_error": config.get("on_item_error") or "fail",
    }


def inner_step(step: StepDefinition) -> StepDefinition:
    """The inner step as a step of its own: the MAP's name and order (items are rows of the
    MAP step), its own type, config, retry_config and timeout; its failure is the item's,
    so its ``on_error`` is always "fail" (``on_item_error`` decides)."""
    inner = step.config.get("step") or {}
    return StepDefinition(
        name=step.name, order=step.order, type=str(inner.get("type") or ""), config=dict(inner.get("config") or {}),
        retry_config=dict(inner.get("retry_config") or {}), on_error="fail",
        timeout_seconds=inner.get("timeout_seconds") or step.timeout_seconds,
    )


def item_context(context: RunContext, item: Any, index: int) -> RunContext:
    return replace(context, scope={**context.scope, "item": item, "index": index})


def run_item(step: StepDefinition, context: RunContext, item: Any, index: int, *, providers: ProviderResolver,
             limits: dict[str, Any]) -> StepResult:
    """One attempt of one item: the inner step with ``item`` and ``index`` in its context.
    Its input keeps the item, so every attempt (and the page) knows what it ran on."""
    from ..runner import run_step  # the runner imports the step registry

    inner = inner_step(step)
    result = run_step(inner, item_context(context, item, index), providers=providers, limits=limits)
    # Not the run's input (a PROMPT records it as "variables"): it often holds every item,
    # and a copy on each item's row would make the rows grow with the square of the list.
    recorded = {key: value for key, value in (result.input or {}).items() if key != "variables"}
    result.input = {**recorded, "item": item, "index": index}
    return result


def item_failure_warning(index: int, error: dict[str, Any] | None) -> str:
    error = error or {}
    return f"Item {index} failed with {error.get('type')}: {error.get('message')}"


def map_result(step: StepDefinition, items: list[tuple[int, str, Any, dict[str, Any] | None, dict]],
               *, input: dict[str, Any]) -> StepResult:
    """The MAP step's result from its items' ``(index, status, output, error, tokens)`` (in
    any order): the outputs in item order, tokens summed; a failed item fails the step
    (``on_item_error`` "fail"), becomes null ("continue") or is left out ("drop"), named in
    ``warnings`` either way. Cost is not summed here: each item's calls were already
    added to the run when they were checkpointed."""
    mode = settings_of(step)["on_item_error"]
    outputs: list[Any] = []
    warnings: list[str] = []
    tokens = TokenUsage()
    for index, status, output, error, item_tokens in sorted(items, key=lambda entry: entry[0]):
        tokens += TokenUsage.from_raw(item_tokens)
        if status == COMPLETED:
            outputs.append(output)
            continue
        if mode == "fail":
            error = error or {}
            return failed(step, ItemFailed(
                f"Item {index} failed with {error.get('type')}: {error.get('message')}",
                details={"index": index, "error": error}), input=input, tokens=tokens.as_dict())
        warnings.append(item_failure_warning(index, error) + ("; its output is null." if mode == "continue"
                                                                else "; it is left out of the output."))
        if mode == "continue":
            outputs.append(None)
    return completed(outputs, input=input, tokens=tokens.as_dict(), warnings=warnings)


ItemRunner = Callable[[int, Any], StepResult]


def run_items(step: StepDefinition, fan_out: list[Any], run_one: ItemRunner, *, limit: int,
              input: dict[str, Any]) -> StepResult:
    """In-process (previews): the first ``limit`` items, one after the other, each one
    attempt (``run_one(index, item)``); the result says when items were left out."""
    results = []
    for index, item in enumerate(fan_out[:limit]):
        result = run_one(index, item)
        results.append((index, result.status, result.output, result.error, result.tokens))
        if result.status == FAILED and settings_of(step)["on_item_error"] == "fail":
            break
    answer = map_result(step, results, input=input)
    if len(fan_out) > limit:
        answer.warnings.append(f"Only the first {limit} of {len(fan_out)} items were run in this preview; "
                               "a real run runs them all.")
    return answer


@register("MAP")
class MapStep(BaseStepHandler):
    config_keys = frozenset({"items", "step", "concurrency", "on_item_error", "max_items"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        expression = step.config.get("items")
        step_input: dict[str, Any] = {"items": expression, "count": None}
        try:
            if not isinstance(expression, str) or not expression.strip():
                raise ConfigError("The MAP step has no items expression: set config.items, e.g. input.topics.")
            value = evaluate_expression(expression, context.as_template_context(), **template_limits(limits))
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise MapItemsError(
                    f"config.items ({expression}) gave {type(value).__name__}, not a list.",
                    details={"items": expression, "type": type(value).__name__})
            max_items = settings_of(step)["max_items"]
            if len(value) > max_items:
                raise MapItemsError(
                    f"config.items ({expression}) gave {len(value)} items, more than max_items ({max_items}).",
                    details={"items": expression, "count": len(value), "max_items": max_items})
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        step_input["count"] = len(value)
        if not value:
            return completed([], input=step_input)
        result = StepResult(status=WAITING, input=step_input)
        result.fan_out = value
        return result

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        check_expression(errors, "config.items", config.get("items"))
        for key, limit in (("max_items", MAX_ITEMS_LIMIT), ("concurrency", MAX_CONCURRENCY)):
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit):
                add_error(errors, f"config.{key}", f"must be a whole number from 1 to {limit}.")
        if config.get("on_item_error", "fail") not in ON_ITEM_ERROR:
            add_error(errors, "config.on_item_error",
                      f'must be "fail" (default), "continue" or "drop", not {config.get("on_item_error")!r}.')
        inner = config.get("step")
        if not isinstance(inner, dict):
            add_error(errors, "config.step", 'is required: the inner step, e.g. {"type": "PROMPT", "config": '
                                             '{"template": "Summarise {{ item }}", "model": {...}}}.')
            return errors
        unknown = sorted(set(inner) - INNER_KEYS)
        if unknown:
            add_error(errors, "config.step", f"Unknown key(s) {', '.join(unknown)}; an inner step has "
                                             f"{', '.join(sorted(INNER_KEYS))} (no name, order or on_error).")
        if inner.get("type") not in INNER_TYPES:
            add_error(errors, "config.step.type", f"must be one of {', '.join(INNER_TYPES)}, not {inner.get('type')!r}.")
            return errors
        inner_dict = {**inner, "name": step_dict.get("name"), "order": step_dict.get("order")}
        for key, messages in get_handler(inner["type"]).config_errors(inner_dict, all_step_names_by_order).items():
            for message in messages:
                add_error(errors, f"config.step.{key}", message)
        for message in validate_retry_config(inner.get("retry_config")):
            add_error(errors, "config.step.retry_config", message)
        return errors

    def feature_errors(self, step_dict: dict[str, Any], features: Container[str]) -> ConfigErrors:
        """The inner step's switches (a multi-model inner PROMPT needs workflow.multiModel)."""
        inner = (step_dict.get("config") or {}).get("step") if isinstance(step_dict.get("config"), dict) else None
        if not isinstance(inner, dict) or inner.get("type") not in INNER_TYPES:
            return {}
        hook = getattr(get_handler(inner["type"]), "feature_errors", None)
        if hook is None:
            return {}
        return {f"config.step.{key}": messages for key, messages in hook(inner, features).items()}
