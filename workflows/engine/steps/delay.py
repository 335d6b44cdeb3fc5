"""DELAY: wait ``seconds`` or ``until`` an ISO 8601 time (a template), holding no worker."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ConfigError, EngineError
from ..templating import render, template_limits
from ..types import ProviderResolver, RunContext, StepDefinition, StepResult
from .base import BaseStepHandler, ConfigErrors, add_error, check_template, completed, config_of, failed
from .registry import register
from .waiting import WaitingStep, iso, utc_now, waiting

MAX_DELAY_SECONDS = 366 * 24 * 3600  # a year: longer waits are a scheduled trigger's job


def parse_until(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"config.until gave {text[:100]!r}, which is not an ISO 8601 time such as 2026-12-03T15:00:00Z.",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@register("DELAY")
class DelayStep(WaitingStep, BaseStepHandler):
    config_keys = frozenset({"seconds", "until"})

    def run(
        self, step: StepDefinition, context: RunContext, *, providers: ProviderResolver, limits: dict[str, Any]
    ) -> StepResult:
        now = utc_now()
        step_input: dict[str, Any] = {"seconds": step.config.get("seconds"), "until": None}
        try:
            if step.config.get("until") not in (None, ""):
                rendered = render(str(step.config["until"]), context.as_template_context(), **template_limits(limits))
                due = parse_until(rendered)
            else:
                seconds = step.config.get("seconds")
                if not _is_seconds(seconds):
                    raise ConfigError("The delay needs config.seconds (a number, 0 or more) or config.until.")
                due = now + timedelta(seconds=seconds)
        except EngineError as exc:
            return failed(step, exc, input=step_input)
        step_input["until"] = iso(due)
        output = {"until": iso(due)}
        if due <= now:  # `until` in the past (or 0 s): nothing to wait for
            return completed(output, input=step_input)
        return waiting(input=step_input, output=output, until=due)

    def resume(self, step: StepDefinition, waited: StepResult, decision: dict[str, Any]) -> StepResult:
        return completed(waited.output, input=waited.input)

    def preview_decision(self, step: StepDefinition, approvals: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        return {"timer": True}, "the delay was skipped (previews do not wait)."

    def config_errors(self, step_dict: dict[str, Any], all_step_names_by_order: dict[str, int]) -> ConfigErrors:
        errors: ConfigErrors = {}
        config = config_of(step_dict, errors)
        self.unknown_key_errors(config, errors)
        has_seconds, has_until = config.get("seconds") is not None, config.get("until") not in (None, "")
        if has_seconds == has_until:
            add_error(errors, "config", "Set exactly one of config.seconds (a number of seconds) or config.until "
                                        "(a template giving an ISO 8601 time).")
        if has_seconds and not _is_seconds(config["seconds"]):
            add_error(errors, "config.seconds", f"must be a number from 0 to {MAX_DELAY_SECONDS} (a year).")
        if has_until:
            check_template(errors, "config.until", config["until"], required=True)
        return errors


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_DELAY_SECONDS
