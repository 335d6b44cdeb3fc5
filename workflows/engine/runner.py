"""Running steps and deciding what runs next.

``run_step`` and ``next_transition`` are all the durable orchestrator needs (it persists
between them); ``run_workflow`` chains them in-process for previews and benchmarks;
``validate_definition`` is what the API checks a definition with before saving it.
"""
from __future__ import annotations

import keyword
import logging
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from providers.errors import ProviderError
from providers.types import TokenUsage

from .errors import INTERNAL_ERROR, EngineError, InputValidationError
from .inputs import VARIABLE_TYPES, type_error, validate_inputs
from .retry import validate_retry_config
from .steps import get_handler, registered_types
from .steps.base import check_next_action, failed
from .steps.map_step import run_item, run_items
from .types import (
    COMPLETED,
    FAILED,
    WAITING,
    NextAction,
    ProviderResolver,
    RunContext,
    StepDefinition,
    StepResult,
    Transition,
    WorkflowDefinition,
)

logger = logging.getLogger(__name__)

ON_ERROR_FAIL = "fail"
ON_ERROR_CONTINUE = "continue"


def run_step(
    step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any] | None = None
) -> StepResult:
    """Run one attempt of ``step``. Never raises: every failure is a FAILED result.

    ``limits``: template limits, and under ``"features"`` the feature switches that are on
    (a container of names; absent means none, so multi-model steps fail).
    """
    try:
        result = get_handler(step.type).run(step, context, providers=providers, limits=limits or {})
    except (EngineError, ProviderError) as exc:
        result = failed(step, exc)
    except Exception as exc:  # a bug in a handler or adapter must not kill the run loop
        logger.exception("step.internal_error", extra={"step": step.name, "step_type": step.type})
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        result = StepResult(
            status=FAILED, error={"type": INTERNAL_ERROR, "message": message, "step": step.name, "details": {}}
        )
    if result.error is not None:
        result.error.setdefault("step", step.name)
    return with_on_error(step, result)


def with_on_error(step: StepDefinition, result: StepResult) -> StepResult:
    """A FAILED step whose ``on_error`` is "continue" outputs its ``default_output``."""
    if result.status == FAILED and step.on_error == ON_ERROR_CONTINUE:
        result.output = step.config.get("default_output")
    return result


def resume_step(step: StepDefinition, waited: StepResult, decision: dict[str, Any]) -> StepResult:
    """The final result of a step that waited (``waited``: what it parked with) once its
    decision or timer arrived. Never raises, like ``run_step``."""
    try:
        result = get_handler(step.type).resume(step, waited, decision)
    except (EngineError, ProviderError) as exc:
        result = failed(step, exc, input=waited.input)
    except Exception as exc:  # a bug in a handler must not strand the run
        logger.exception("step.internal_error", extra={"step": step.name, "step_type": step.type})
        result = StepResult(status=FAILED, input=waited.input,
                            error={"type": INTERNAL_ERROR, "message": f"{type(exc).__name__}: {exc}",
                                   "step": step.name, "details": {}})
    if result.error is not None:
        result.error.setdefault("step", step.name)
    return with_on_error(step, result)


ChildRunner = Callable[[dict[str, Any]], dict[str, Any]]
IN_PROCESS_MAP_ITEMS = 20  # previews and in-process runs: the items of a MAP they run


def run_fan_out(step: StepDefinition, result: StepResult, context: RunContext, *, providers: ProviderResolver,
                limits: dict[str, Any] | None, item_limit: int = IN_PROCESS_MAP_ITEMS) -> StepResult:
    """In-process runs (previews) have no workers to spread a MAP over: its first
    ``item_limit`` items run here, one attempt each, and the result says so. Any other
    result is returned as it is."""
    if result.fan_out is None:
        return result

    model_outputs: list[dict[str, Any]] = []

    def run_one(index: int, item: Any) -> StepResult:
        ran = run_item(step, context, item, index, providers=providers, limits=limits or {})
        model_outputs.extend(ran.model_outputs)
        return ran

    answer = run_items(step, result.fan_out, run_one, limit=item_limit, input=result.input)
    answer.model_outputs = model_outputs
    return with_on_error(step, answer)


def answer_in_process(step: StepDefinition, result: StepResult, approvals: dict[str, Any],
                      children: ChildRunner | None = None) -> StepResult:
    """In-process runs (previews) have no one to wait for: a WAITING result is resumed at
    once with the handler's preview decision (an APPROVAL from ``approvals``, a DELAY
    skipped), with a warning saying so; a WORKFLOW step's child is run by ``children``
    (``{"workflow", "input"}`` → ``{"status", "output", "error", ...}``), in-process too.
    Any other result is returned as it is."""
    if result.child is not None and children is not None:
        child = children(result.child)
        if result.status != WAITING:  # wait: false, the child's end is not this step's business
            return result
        return resume_step(step, result, {"child": child})
    if result.status != WAITING:
        return result
    decision, warning = get_handler(step.type).preview_decision(step, approvals)
    answered = resume_step(step, result, decision)
    if warning:
        answered.warnings = [*answered.warnings, warning]
    return answered


def first_step(definition: WorkflowDefinition) -> StepDefinition | None:
    return definition.steps[0] if definition.steps else None


def _later_steps(definition: WorkflowDefinition, step: StepDefinition) -> list[StepDefinition]:
    return [candidate for candidate in definition.steps if candidate.order > step.order]


def next_transition(definition: WorkflowDefinition, step: StepDefinition, result: StepResult) -> Transition:
    """Where the run goes after ``step`` produced ``result``.

    COMPLETED follows ``result.next``; FAILED follows ``step.on_error``. Steps jumped
    over (by ``stop`` or ``skip_to``) are listed in ``skipped`` to be recorded SKIPPED.
    """
    if result.status == FAILED:
        if step.on_error == ON_ERROR_CONTINUE:
            action = NextAction("continue")
        elif step.on_error.startswith("skip_to:"):
            action = NextAction.parse(step.on_error)
        else:  # "fail", and anything unexpected: failing is the safe reading
            return Transition(None, [], fail_run=True)
    else:
        action = result.next
    later = _later_steps(definition, step)
    if action.kind == "stop":
        return Transition(None, later)
    if action.kind == "skip_to":
        for index, candidate in enumerate(later):
            if candidate.name == action.target:
                return Transition(candidate, later[:index])
        # Validation forbids this; a definition edited by hand fails loudly, not silently.
        logger.error("step.bad_skip_target", extra={"step": step.name, "target": action.target})
        return Transition(None, [], fail_run=True)
    return Transition(later[0] if later else None, [])


def context_entry(step: StepDefinition, result: StepResult) -> dict[str, Any]:
    """What later templates see as ``steps.<name>``."""
    return {"output": result.output, "outputs": result.outputs, "status": result.status}


@dataclass
class WorkflowRunResult:
    status: str  # COMPLETED | FAILED
    output: Any = None
    error: dict[str, Any] | None = None
    # (step, its result or None when SKIPPED, duration in ms), in the order things happened
    steps: list[tuple[StepDefinition, StepResult | None, int]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: TokenUsage().as_dict())  # every step's, added up
    warnings: list[str] = field(default_factory=list)


def run_workflow(
    definition: WorkflowDefinition,
    inputs: dict[str, Any],
    *,
    providers: ProviderResolver,
    trigger: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
    approvals: dict[str, Any] | None = None,
    children: ChildRunner | None = None,
) -> WorkflowRunResult:
    """Run every step in-process, one attempt each (no retries, no backoff sleeps).

    Steps that wait are answered at once: an APPROVAL by ``approvals`` (``{"step name":
    true | false}``, approved with a warning when absent), a DELAY is skipped with a warning.

    Inputs are validated first; invalid ones give a FAILED result whose error is the
    InputValidationError payload (``step`` null, ``details.errors`` per variable).
    """
    try:
        validated = validate_inputs(definition.variables, inputs)
    except InputValidationError as exc:
        return WorkflowRunResult(status=FAILED, error=exc.to_payload(None))
    context = RunContext(inputs=validated, steps={}, trigger=trigger or {"type": "MANUAL", "payload": None})
    run = WorkflowRunResult(status=COMPLETED)
    used = TokenUsage()
    step = first_step(definition)
    while step is not None:
        started = time.monotonic()
        result = run_step(step, context, providers=providers, limits=limits)
        result = run_fan_out(step, result, context, providers=providers, limits=limits)
        result = answer_in_process(step, result, approvals or {}, children)
        run.steps.append((step, result, int((time.monotonic() - started) * 1000)))
        used += TokenUsage.from_raw(result.tokens)
        run.warnings.extend(f"{step.name}: {warning}" for warning in result.warnings)
        context.steps[step.name] = context_entry(step, result)
        run.output = result.output  # the run's output is the last step that ran
        transition = next_transition(definition, step, result)
        run.steps.extend((skipped, None, 0) for skipped in transition.skipped)
        if transition.fail_run:
            run.status, run.error = FAILED, result.error or _bad_target_error(step, result)
            break
        step = transition.next_step
    run.tokens = used.as_dict()
    return run


def _bad_target_error(step: StepDefinition, result: StepResult) -> dict[str, Any]:
    target = result.next.target if result.status == COMPLETED else step.on_error
    return {
        "type": "ConfigError",
        "message": f'Step "{step.name}" jumps to "{target}", which is not a later step.',
        "step": step.name,
        "details": {},
    }


# ----------------------------------------------------------------- validation


def _is_identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


def _is_order(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


IDENTIFIER_HINT = "letters, digits and _, not starting with a digit, and not a Python keyword (e.g. customer_name)"


def validate_definition(
    steps: list[dict[str, Any]], variables: list[dict[str, Any]], *, features: Container[str] = frozenset()
) -> dict[str, list[str]]:
    """Every problem in a definition, keyed by where to fix it (``steps[1].config.expression``).

    An empty dict means the definition can run. ``features``: the feature switches that
    are on (e.g. ``workflow.multiModel``); the services pass ``providers.flags.live_features()``.
    Without them, everything a switch gates is refused.
    """
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    _validate_variables(variables, add)
    if not isinstance(steps, list):
        add("steps", "must be a list of steps.")
        return errors
    names_by_order: dict[str, int] = {}
    for step in steps:
        if isinstance(step, dict) and _is_identifier(step.get("name")) and _is_order(step.get("order")):
            names_by_order.setdefault(step["name"], step["order"])
    seen_names: set[str] = set()
    seen_orders: set[int] = set()
    for index, step in enumerate(steps):
        prefix = f"steps[{index}]"
        if not isinstance(step, dict):
            add(prefix, "must be an object.")
            continue
        name, order = step.get("name"), step.get("order")
        if not _is_identifier(name):
            add(f"{prefix}.name", f"{name!r} is not a valid step name: use {IDENTIFIER_HINT}.")
        elif name in seen_names:
            add(f"{prefix}.name", f'Another step is already named "{name}"; step names must be unique.')
        else:
            seen_names.add(name)
        if not _is_order(order):
            add(f"{prefix}.order", "must be a whole number, 0 or more.")
        elif order in seen_orders:
            add(f"{prefix}.order", f"Another step already has order {order}; orders must be unique.")
        else:
            seen_orders.add(order)
        if step.get("type") not in registered_types():
            add(f"{prefix}.type", f"{step.get('type')!r} is not a step type; use one of {', '.join(registered_types())}.")
        else:
            handler = get_handler(step["type"])
            for key, messages in handler.config_errors(step, names_by_order).items():
                for message in messages:
                    add(f"{prefix}.{key}", message)
            # Optional hook: what a switch that is off forbids (PROMPT: several models).
            feature_errors = getattr(handler, "feature_errors", None)
            if feature_errors is not None:
                for key, messages in feature_errors(step, features).items():
                    for message in messages:
                        add(f"{prefix}.{key}", message)
        _validate_on_error(step, names_by_order, lambda message, p=prefix: add(f"{p}.on_error", message))
        for message in validate_retry_config(step.get("retry_config")):
            add(f"{prefix}.retry_config", message)
        timeout = step.get("timeout_seconds")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
            add(f"{prefix}.timeout_seconds", "must be a positive number of seconds, or empty for the default (120).")
    return errors


def _validate_on_error(step: dict[str, Any], names_by_order: dict[str, int], add: Callable[[str], None]) -> None:
    on_error = step.get("on_error") or ON_ERROR_FAIL
    if on_error in (ON_ERROR_FAIL, ON_ERROR_CONTINUE):
        return
    if not isinstance(on_error, str) or not on_error.startswith("skip_to:"):
        add(f'{on_error!r} is not understood; use "fail", "continue" or "skip_to:<later step name>".')
        return
    found: dict[str, list[str]] = {}
    check_next_action(
        found, "on_error", on_error, step_order=step.get("order"), names_by_order=names_by_order
    )
    for message in found.get("on_error", []):
        add(message)


def _validate_variables(variables: Any, add: Callable[[str, str], None]) -> None:
    if not isinstance(variables, list):
        add("variables", "must be a list of variables.")
        return
    seen: set[str] = set()
    for index, variable in enumerate(variables):
        prefix = f"variables[{index}]"
        if not isinstance(variable, dict):
            add(prefix, "must be an object.")
            continue
        name = variable.get("name")
        if not _is_identifier(name):
            add(f"{prefix}.name", f"{name!r} is not a valid variable name: use {IDENTIFIER_HINT}.")
        elif name in seen:
            add(f"{prefix}.name", f'Another variable is already named "{name}"; names must be unique.')
        else:
            seen.add(name)
        var_type = variable.get("type", "STRING")
        if var_type not in VARIABLE_TYPES:
            add(f"{prefix}.type", f"{var_type!r} is not a variable type; use one of {', '.join(VARIABLE_TYPES)}.")
            continue
        if "required" in variable and not isinstance(variable["required"], bool):
            add(f"{prefix}.required", "must be true or false.")
        for key in ("default", "sample"):
            value = variable.get(key)
            if value is not None and (problem := type_error(var_type, value)):
                add(f"{prefix}.{key}", f"does not match the variable's type: it {problem}")
