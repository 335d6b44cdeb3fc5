"""WORKFLOW: run another workflow of the same owner as a child run, and (``wait``, default)
wait for it without holding a worker: its output becomes this step's output, its failure
fails this step (then ``on_error`` applies).

The engine only renders the child's input and says "start this child"
(``StepResult.child``); the orchestration starts it through ``execution_start`` in the
same transaction that parks this step, and the child's end resumes it.
"""
from __future__ import annotations

from typing import Any

from ..errors import EngineError
from ..templating import evaluate_expression, render, template_limits
from ..types import ProviderResolver, RunContext, StepDefinition, StepResult
from .base import BaseStepHandler, ConfigErrors, add_error, check_template, completed, config_of, failed
from .registry import register
from .waiting import WaitingStep, waiting

CHILD = "child"  # decision key: the finished child run {"execution", "status", "output", "error"}


class ChildFailed(EngineError):
    """The child run ended FAILED or CANCELLED."""


def child_value(source: str, context: RunContext, limits: dict[str, Any]) -> Any:
    """A child input: ``"{{ expression }}"`` alone keeps the expression's type (a number
    stays a number for a NUMBER variable); any other template renders to text."""
    stripped = source.strip()
    inner = stripped[2:-2] if stripped.startswith("{{") and stripped.endswith("}}") else None
    if inner is not None and "{{" not in inner and "}}" not in inner:
        return evaluate_expression(inner.strip(), context.as_template_context(), **template_limits(limits))
    return render(source, context.as_template_context(), **template_limits(limits))


def is_workflow_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@register("WORKFLOW")
class WorkflowStep(WaitingStep, BaseStepHandler):
    config_keys = frozenset({"workflow", "input", "wait"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        child_workflow = step.config.get("workflow")
        step_input: dict[str, Any] = {"workflow": child_workflow, "input": {}}
        try:
            for name, source in (step.config.get("input") or {}).items():
                step_input["input"][name] = child_value(str(source), context, limits)
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        child = {"workflow": child_workflow, "input": dict(step_input["input"])}
        if step.config.get("wait", True) is False:
            result = completed({"execution": None, "workflow": child_workflow}, input=step_input)
        else:
            result = waiting(input=step_input, output={"execution": None, "workflow": child_workflow}, until=None)
        result.child = child
        return result

    def resume(self, step: StepDefinition, waited: StepResult, decision: dict[str, Any]) -> StepResult:
        child = decision.get(CHILD) or {}
        if child.get("status") == "COMPLETED":
            return completed(child.get("output"), input=waited.input)
        error = child.get("error") or {}
        return failed(step, ChildFailed(
            f'The child run {child.get("execution")} ended {child.get("status")}: '
            f'{error.get("type", "")} {error.get("message", "")}'.strip(),
            details={"execution": child.get("execution"), "status": child.get("status"), "error": error}),
            input=waited.input)

    def preview_decision(self, step: StepDefinition, approvals: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        # Previews run children in-process (services/preview.py); without one, say so.
        return ({CHILD: {"status": "FAILED", "error": {"type": "PreviewUnsupported",
                                                       "message": "no child run in this preview"}}},
                "the child workflow was not run in this preview.")

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        if not is_workflow_id(config.get("workflow")):
            add_error(errors, "config.workflow", "must be the id (a whole number) of one of your workflows.")
        inputs = config.get("input")
        if inputs is not None and not isinstance(inputs, dict):
            add_error(errors, "config.input", 'must map the child\'s variables to templates, e.g. {"topic": '
                                              '"{{ input.topic }}"}.')
        for name, source in (inputs or {}).items() if isinstance(inputs, dict) else ():
            check_template(errors, f"config.input.{name}", source, required=False)
        if "wait" in config and not isinstance(config["wait"], bool):
            add_error(errors, "config.wait", "must be true (default: the child's output is this step's) or false.")
        return errors
