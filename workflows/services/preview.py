"""Previews: run a saved definition in the web process and persist nothing (DESIGN §6).

No execution, step or invocation row is written and no Celery message is sent: the
steps run through the engine's own ``run_step`` / ``next_transition`` here, in-process.
Options: sample data (with type-appropriate placeholders for variables that have no
sample nor default), ``dry_run_models`` (no provider is called; each model call is an
estimate from the rendered prompt), ``until`` + ``steps_output`` (single-step and
prefix test runs), ``from_execution`` (a past run's input), and ``cost_estimate_usd``
from the admin's price list.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings

from promptpilot.common.errors import ValidationFailed
from providers import pricing
from providers.ratelimit import limited_adapter
from providers.types import ModelRequest, ModelResponse, TokenUsage

from ..engine.errors import InputValidationError
from ..engine.inputs import sample_inputs, validate_inputs
from ..engine.runner import (
    answer_in_process,
    context_entry,
    first_step,
    next_transition,
    run_fan_out,
    run_step,
    run_workflow,
)
from ..engine.types import COMPLETED, FAILED, RunContext, StepDefinition, StepResult, WorkflowDefinition
from ..errors import InputValidationFailed
from ..models import Workflow
from ..selectors import execution_get
from .definitions import workflow_definition_snapshot
from .limits import engine_limits
from .transitions import version_snapshot

PROVIDED = "PROVIDED"  # a step not run: its output came from ``steps_output``
SKIPPED = "SKIPPED"
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text; no tokenizer download needed
PLACEHOLDERS: dict[str, Any] = {"STRING": None, "NUMBER": 0, "BOOLEAN": False, "JSON": {}}


# --- offline estimates ----------------------------------------------------------------

def estimate_tokens(text: str | None) -> int:
    """Tokens of ``text`` without a tokenizer: about one per four characters."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


class DryRunAdapter:
    """Stands in for every provider in a dry run: no network, an estimate instead of an answer.

    Input tokens are estimated from the rendered prompt and system; output tokens are the
    model's ``max_tokens`` when set, else as many as the input (a guess, marked estimated).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def complete(self, request: ModelRequest) -> ModelResponse:
        used_in = estimate_tokens(request.prompt) + estimate_tokens(request.system)
        max_tokens = request.params.get("max_tokens")
        used_out = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else used_in
        return ModelResponse(
            content=f"[dry run: {request.provider}:{request.model} was not called]",
            tokens=TokenUsage.of(used_in, used_out).as_dict(),
            latency_ms=0,
            finish_reason="dry_run",
        )

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        return self.complete(request)


def _dry_run_resolver(name: str) -> DryRunAdapter:
    return DryRunAdapter(name)


def _jsonable(value: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> Any:
    """A plain-JSON rendition of any value (for outputs that are not plain JSON)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth > 64 or id(value) in seen:
        return repr(value)[:1000]
    inner = seen | {id(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1, inner) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1, inner) for v in value]
    return repr(value)[:1000]


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain_json(v, depth + 1) for v in value)
    return False


class _NotPlain(Exception):
    pass


def _plain_copy(value: Any, depth: int = 0) -> Any:
    """A copy of a plain-JSON value in one pass (new dicts and lists; strings and numbers
    are immutable), or ``_NotPlain``. Outputs are nearly always plain JSON, and this costs a
    fraction of ``copy.deepcopy`` followed by ``_is_plain_json``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _NotPlain
    if depth > 64:
        raise _NotPlain
    if type(value) is dict:
        copied = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotPlain
            copied[key] = _plain_copy(item, depth + 1)
        return copied
    if type(value) is list:
        return [_plain_copy(item, depth + 1) for item in value]
    raise _NotPlain


def _detached(value: Any, label: str, warnings: list[str]) -> Any:
    """A deep copy, so the caller can never mutate engine state; a value that cannot be
    copied comes back as it is, with a warning, never a crash."""
    try:
        return _plain_copy(value)
    except (_NotPlain, RecursionError):
        pass  # the careful path below: copy what can be copied, say what could not
    try:
        value = copy.deepcopy(value)
    except Exception as exc:  # noqa: BLE001  (any object may refuse to be copied)
        warnings.append(f"{label} could not be copied ({type(exc).__name__}); returned as it is.")
    try:
        plain = _is_plain_json(value)
    except RecursionError:
        plain = False
    if not plain:
        warnings.append(f"{label} is not plain JSON; returned as its closest JSON form.")
        value = _jsonable(value)
    return value



# --- inputs ---------------------------------------------------------------------------

def _placeholder(variable: dict[str, Any]) -> Any:
    value = PLACEHOLDERS.get(variable.get("type") or "STRING")
    return f"<{variable['name']}>" if value is None else copy.deepcopy(value)


def _preview_inputs(*, variables: list[dict[str, Any]], inputs: dict[str, Any], use_sample_data: bool,
                    past_input: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    """Sample data, then the past run's input, then ``inputs``: later ones win."""
    raw: dict[str, Any] = {}
    if use_sample_data:
        raw.update(sample_inputs(variables))
        given = {**(past_input or {}), **inputs}
        for variable in variables:
            name = variable["name"]
            if name in raw or name in given:
                continue
            raw[name] = _placeholder(variable)
            warnings.append(f'Variable "{name}" has no sample nor default: the preview used the placeholder '
                            f"{json.dumps(raw[name])}. Give it a sample to preview with real-looking data.")
    raw.update(past_input or {})
    raw.update(inputs)
    try:
        return validate_inputs(variables, raw)
    except InputValidationError as exc:
        errors = dict(exc.errors)
        raise InputValidationFailed(
            "The input is invalid: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), {"errors": errors}
        ) from None


def _past_input(*, user, workflow: Workflow, execution_id: Any) -> dict[str, Any]:
    execution = execution_get(user, execution_id)  # another user's run: 404, like a missing one
    if execution.workflow_id != workflow.pk:
        raise ValidationFailed(
            f"from_execution: execution {execution.pk} is a run of another workflow (id {execution.workflow_id}); "
            "use a run of this workflow.",
            {"errors": {"from_execution": ["is a run of another workflow."]}},
        )
    return dict(execution.input or {})


def _check_step_names(definition: WorkflowDefinition, until: str | None, steps_output: dict[str, Any],
                      approvals: dict[str, Any] | None = None) -> None:
    names = [step.name for step in definition.steps]
    approval_names = [step.name for step in definition.steps if step.type == "APPROVAL"]
    errors: dict[str, list[str]] = {}
    known = ", ".join(names) or "none"
    if until is not None and until not in names:
        errors["until"] = [f'"{until}" is not a step of this workflow (steps: {known}).']
    unknown = [name for name in steps_output if name not in names]
    if unknown:
        errors["steps_output"] = [f'{", ".join(json.dumps(n) for n in unknown)} not a step of this workflow '
                                  f"(steps: {known})."]
    not_approvals = [name for name in approvals or {} if name not in approval_names]
    if not_approvals:
        errors["approvals"] = [f'{", ".join(json.dumps(n) for n in not_approvals)} not an APPROVAL step of this '
                               f'workflow (APPROVAL steps: {", ".join(approval_names) or "none"}).']
    if errors:
        field, messages = next(iter(errors.items()))
        raise ValidationFailed(f"The preview options are invalid: {field}: {messages[0]}", {"errors": errors})


# --- costs ----------------------------------------------------------------------------

def _step_cost(result: StepResult | None) -> Decimal | None:
    if result is None or not result.model_outputs:
        return Decimal(0)
    records = [dict(record) for record in result.model_outputs]
    pricing.annotate_costs(records)
    return pricing.sum_costs(records)


def _sum(costs: list[Decimal | None]) -> float | None:
    if any(cost is None for cost in costs):
        return None
    return pricing.to_json(sum(costs, Decimal(0)).quantize(pricing.QUANTUM))


# --- the run --------------------------------------------------------------------------

@dataclasses.dataclass
class _Ran:
    step: StepDefinition
    result: StepResult | None  # None: SKIPPED
    duration_ms: int
    status: str
    dry_run: bool = False


def _run(definition: WorkflowDefinition, context: RunContext, *, providers: Callable[[str], Any], dry_run: bool,
         until: str | None, steps_output: dict[str, Any], limits: dict[str, Any],
         approvals: dict[str, Any], children=None) -> tuple[list[_Ran], str, Any]:
    ran: list[_Ran] = []
    status, output = COMPLETED, None
    step = first_step(definition)
    while step is not None:
        if step.name in steps_output:
            result, ms, shown, dry = StepResult(status=COMPLETED, output=steps_output[step.name]), 0, PROVIDED, False
        else:
            dry = dry_run and _runs_dry(step)
            # A dry run's answer is a placeholder, so output_format "json" and output_schema are not checked.
            runnable = _dry_runnable(step) if dry_run else step
            started = time.monotonic()
            result = run_step(runnable, context, providers=providers, limits=limits)
            # MAP: its first items run here, one after the other (the result's warnings say so).
            result = run_fan_out(runnable, result, context, providers=providers, limits=limits)
            result = answer_in_process(step, result, approvals, children)
            ms, shown = int((time.monotonic() - started) * 1000), result.status
            if dry and step.config.get("output_schema") is not None:
                result.warnings.append("Dry run: the output is a placeholder, so output_schema was not checked.")
            elif dry and step.config.get("output_format") == "json":
                result.warnings.append('Dry run: the output is a placeholder, so output_format "json" was not checked.')
        ran.append(_Ran(step, result, ms, shown, dry))
        context.steps[step.name] = context_entry(step, result)
        output = result.output
        if step.name == until:
            status = result.status
            break
        transition = next_transition(definition, step, result)
        ran.extend(_Ran(skipped, None, 0, SKIPPED) for skipped in transition.skipped)
        if transition.fail_run:
            status = FAILED
            break
        step = transition.next_step
    return ran, status, output


def _saved_definition(workflow: Workflow) -> tuple[dict[str, Any], WorkflowDefinition]:
    """The definition a run started now would pin: the latest version, which the
    workflow's row points at (``workflow_version_create`` keeps the pointer), so the row
    the caller loaded names it and the preview asks the database nothing more. It is
    parsed once per process, like the worker's (versions are immutable). A workflow
    without a version yet (made outside the services) is read from its rows; nothing is
    written."""
    if workflow.latest_version_id is not None:
        return version_snapshot(workflow.latest_version_id)
    snapshot = workflow_definition_snapshot(workflow=workflow)
    return snapshot, WorkflowDefinition.from_dict(snapshot)


DRY_RUN_TYPES = ("PROMPT", "HTTP")  # the steps a dry run replaces with placeholders (a MAP's inner one too)


def _runs_dry(step: StepDefinition) -> bool:
    inner = step.config.get("step") if step.type == "MAP" else None
    return step.type in DRY_RUN_TYPES or (isinstance(inner, dict) and inner.get("type") in DRY_RUN_TYPES)


def _dry_runnable(step: StepDefinition) -> StepDefinition:
    """The step a dry run runs: a PROMPT (a MAP's inner PROMPT too) whose placeholder answer
    is not checked as JSON or against its schema."""
    if step.type == "PROMPT":
        return dataclasses.replace(step, config=_unchecked(step.config))
    inner = step.config.get("step") if step.type == "MAP" else None
    if isinstance(inner, dict) and inner.get("type") == "PROMPT":
        unchecked_inner = {**inner, "config": _unchecked(dict(inner.get("config") or {}))}
        return dataclasses.replace(step, config={**step.config, "step": unchecked_inner})
    return step


def _unchecked(config: dict[str, Any]) -> dict[str, Any]:
    return {**{key: value for key, value in config.items() if key != "output_schema"}, "output_format": "text"}


def _child_runner(*, owner_id: int, providers: Callable[[str], Any], limits: dict[str, Any],
                  approvals: dict[str, Any], depth: int = 1):
    """WORKFLOW steps in a preview: the child workflow (same owner, within the depth
    limit) runs in-process too, through ``run_workflow``, persisting nothing."""

    def run_child(child: dict[str, Any]) -> dict[str, Any]:
        workflow = Workflow.objects.filter(pk=child.get("workflow"), owner_id=owner_id).first()
        limit = int(settings.PROMPTPILOT["WORKFLOW_MAX_DEPTH"])
        if workflow is None or depth > limit:
            message = (f"Workflow {child.get('workflow')} is not one of the owner's workflows." if workflow is None
                       else f"Too deeply nested: PROMPTPILOT_WORKFLOW_MAX_DEPTH is {limit}.")
            return {"execution": None, "status": FAILED, "output": None,
                    "error": {"type": "ConfigError", "message": message}}
        definition = _saved_definition(workflow)[1]  # the version a child run started now would pin
        ran = run_workflow(definition, child.get("input") or {}, providers=providers, limits=limits,
                           approvals=approvals, children=_child_runner(owner_id=owner_id, providers=providers,
                                                                       limits=limits, approvals=approvals,
                                                                       depth=depth + 1))
        return {"execution": None, "status": ran.status, "output": ran.output, "error": ran.error}

    return run_child


def _step_estimated(entry: _Ran) -> bool:
    if entry.dry_run:
        return True
    for record in (entry.result.model_outputs if entry.result else None) or []:
        # echo counts words: an estimate by design
        if record.get("provider") == "echo" or record.get("estimated") or (record.get("tokens") or {}).get("estimated"):
            return True
    return False


def workflow_preview(*, workflow: Workflow, user=None, inputs: dict[str, Any] | None = None,
                     use_sample_data: bool = False, trigger: dict[str, Any] | None = None,
                     dry_run_models: bool = False, until: str | None = None,
                     steps_output: dict[str, Any] | None = None, from_execution: Any = None,
                     approvals: dict[str, bool] | None = None,
                     providers: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run the saved definition in-process and persist nothing (DESIGN §6 shape).

    ``user``: whose past runs ``from_execution`` may name (default: the owner).
    ``approvals``: ``{"<APPROVAL step>": true | false}`` answers approvals (default: approved,
    with a warning); DELAY steps are skipped with a warning (DESIGN §8).
    Raises ``InputValidationFailed`` for invalid input, ``ValidationFailed`` for an
    ``until`` / ``steps_output`` naming no step, ``NotFound`` for another user's run.
    """
    started = time.monotonic()
    snapshot, definition = _saved_definition(workflow)
    steps_output = dict(steps_output or {})
    _check_step_names(definition, until, steps_output, approvals)
    warnings: list[str] = []
    past = _past_input(user=user or workflow.owner, workflow=workflow, execution_id=from_execution) \
        if from_execution is not None else None
    validated = _preview_inputs(variables=snapshot["variables"], inputs=dict(inputs or {}),
                                use_sample_data=use_sample_data, past_input=past, warnings=warnings)
    context = RunContext(inputs=validated, steps={},
                         trigger={"type": "MANUAL", "payload": None, **(trigger or {})})
    limits = engine_limits(max_seconds=settings.PROMPTPILOT["TEMPLATE_PREVIEW_MAX_SECONDS"], dry_run=dry_run_models)
    resolver = _dry_run_resolver if dry_run_models else (providers or limited_adapter)  # shared rate limits apply
    children = _child_runner(owner_id=workflow.owner_id, providers=resolver, limits=limits,
                             approvals=dict(approvals or {}))
    ran, status, output = _run(definition, context, providers=resolver, dry_run=dry_run_models, until=until,
                               steps_output=steps_output, limits=limits, approvals=dict(approvals or {}),
                               children=children)

    steps, costs, used = [], [], TokenUsage()
    for entry in ran:
        result = entry.result
        step_warnings = [str(w) for w in (result.warnings if result else None) or []]
        warnings.extend(f"{entry.step.name}: {w}" for w in step_warnings)
        label = f'Step "{entry.step.name}"'
        cost = _step_cost(result) if entry.status != PROVIDED else Decimal(0)
        costs.append(cost)
        tokens = TokenUsage.from_raw(result.tokens if result else None)
        used += tokens
        steps.append({
            "name": entry.step.name,
            "type": entry.step.type,
            "status": entry.status,
            "duration_ms": entry.duration_ms,
            "input": _detached(result.input, f"{label} input", step_warnings) if result else None,
            "output": _detached(result.output, f"{label} output", step_warnings) if result else None,
            "error": _detached(result.error, f"{label} error", step_warnings) if result else None,
            "warnings": step_warnings,
            "token_estimate": {**tokens.as_dict(), "estimated": _step_estimated(entry)},
            "cost_estimate_usd": pricing.to_json(cost),
            "dry_run": entry.dry_run,
        })
    return {
        "status": status,
        "steps": steps,
        "warnings": warnings,
        "token_estimate": {**used.as_dict(), "estimated": any(s["token_estimate"]["estimated"] for s in steps)},
        "cost_estimate_usd": _sum(costs),
        "dry_run": dry_run_models,
        "output": _detached(output, "Workflow output", warnings),
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
