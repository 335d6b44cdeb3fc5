"""APPROVAL: show a message (and an optional form) to a person and wait for their decision.

The step parks WAITING with ``{"message", "form", "expires_at"}`` as its output; a
decision (``approve``/``reject`` by the run's owner, or the signed link) resumes it with
``{"approved", "decided_by", "comment", "data", "decided_at"}``, which becomes its output.
``timeout_seconds`` ends the wait by itself, as ``on_timeout`` says.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..errors import EngineError, InputValidationError
from ..inputs import VARIABLE_TYPES, validate_inputs
from ..templating import render, template_limits
from ..types import ProviderResolver, RunContext, StepDefinition, StepResult
from .base import BaseStepHandler, ConfigErrors, add_error, check_template, completed, config_of, failed
from .registry import register
from .waiting import TIMER, WaitingStep, iso, utc_now, waiting

ON_TIMEOUT = ("reject", "approve", "fail")
FORM_FIELD_KEYS = frozenset({"name", "type", "required", "description"})


class ApprovalTimeout(EngineError):
    """Nobody decided before ``timeout_seconds`` and ``on_timeout`` is ``"fail"``."""


def form_data(step: StepDefinition, data: Any) -> dict[str, Any]:
    """``data`` checked against the step's ``form`` like run inputs against variables
    (types strict, required fields, unknown keys refused). Raises InputValidationError."""
    form = step.config.get("form") or []
    if not form and data in (None, {}):
        return {}
    return validate_inputs([{"required": True, "type": "STRING", **field} for field in form], data or {})


def decision_output(*, approved: bool, decided_by: str | None, comment: str, data: dict[str, Any],
                    decided_at: str) -> dict[str, Any]:
    return {"approved": approved, "decided_by": decided_by, "comment": comment, "data": data,
            "decided_at": decided_at}


@register("APPROVAL")
class ApprovalStep(WaitingStep, BaseStepHandler):
    config_keys = frozenset({"message", "form", "timeout_seconds", "on_timeout"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        step_input: dict[str, Any] = {"message": None, "form": step.config.get("form") or []}
        try:
            step_input["message"] = render(str(step.config.get("message") or ""), context.as_template_context(),
                                           **template_limits(limits))
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        timeout = step.config.get("timeout_seconds")
        until = utc_now() + timedelta(seconds=timeout) if timeout else None
        output = {**step_input, "expires_at": iso(until)}
        return waiting(input=step_input, output=output, until=until)

    def resume(self, step: StepDefinition, waited: StepResult, decision: dict[str, Any]) -> StepResult:
        if not decision.get(TIMER):
            return completed(decision_output(
                approved=bool(decision["approved"]), decided_by=decision.get("decided_by"),
                comment=decision.get("comment") or "", data=decision.get("data") or {},
                decided_at=decision["decided_at"]), input=waited.input)
        on_timeout = step.config.get("on_timeout") or "reject"
        seconds = step.config.get("timeout_seconds")
        if on_timeout == "fail":
            return failed(step, ApprovalTimeout(f"Nobody decided within {seconds} s (on_timeout is \"fail\").",
                                                details={"timeout_seconds": seconds}), input=waited.input)
        return completed(decision_output(
            approved=on_timeout == "approve", decided_by=None, comment=f"No decision within {seconds} s.",
            data={}, decided_at=iso(utc_now())), input=waited.input,
            warnings=[f"Timed out after {seconds} s: {'approved' if on_timeout == 'approve' else 'rejected'} "
                      "(on_timeout)."])

    def preview_decision(self, step: StepDefinition, approvals: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        approved = approvals.get(step.name)
        warning = None
        if not isinstance(approved, bool):
            approved = True
            warning = f'approved by default: give "approvals": {{"{step.name}": false}} to preview a rejection.'

        decision = {"approved": approved, "decided_by": "preview", "comment": "", "data": {},
                    "decided_at": iso(utc_now())}
        return decision, warning

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        check_template(errors, "config.message", config.get("message"), required=True)
        timeout = config.get("timeout_seconds")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            add_error(errors, "config.timeout_seconds", "must be a positive number of seconds, or left out to wait "
                                                        "until someone decides.")
        if config.get("on_timeout", "reject") not in ON_TIMEOUT:
            add_error(errors, "config.on_timeout", f'must be "reject" (default), "approve" or "fail", not '
                                                   f'{config.get("on_timeout")!r}.')
        _form_errors(config.get("form"), errors)
        return errors


def _form_errors(form: Any, errors: ConfigErrors) -> None:
    if form is None:
        return
    if not isinstance(form, list):
        add_error(errors, "config.form", "must be a list of fields such as {\"name\": \"reason\", \"type\": "
                                         "\"STRING\", \"required\": true}.")
        return
    seen: set[str] = set()
    for index, field in enumerate(form):
        where = f"config.form[{index}]"
        if not isinstance(field, dict):
            add_error(errors, where, "must be an object with name, type and required.")
            continue
        unknown = sorted(set(field) - FORM_FIELD_KEYS)
        if unknown:
            add_error(errors, where, f"Unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(FORM_FIELD_KEYS))}.")
        name = field.get("name")
        if not isinstance(name, str) or not name.isidentifier():
            add_error(errors, f"{where}.name", f"{name!r} is not a valid field name (letters, digits and _).")
        elif name in seen:
            add_error(errors, f"{where}.name", f'Another field is already named "{name}".')
        else:
            seen.add(name)
        if field.get("type", "STRING") not in VARIABLE_TYPES:
            add_error(errors, f"{where}.type", f"must be one of {', '.join(VARIABLE_TYPES)}.")
        if "required" in field and not isinstance(field["required"], bool):
            add_error(errors, f"{where}.required", "must be true or false.")


__all__ = ["ApprovalStep", "ApprovalTimeout", "InputValidationError", "decision_output", "form_data"]
