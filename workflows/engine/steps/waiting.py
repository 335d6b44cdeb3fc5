"""What step types that wait share (APPROVAL, DELAY).

Such a step's ``run`` answers a WAITING result (or a final one when there is nothing to
wait for); the durable orchestration parks the step and, when the decision or the timer
arrives, calls ``resume`` with it, which answers the step's final result. A decision is
a plain dict: ``{"timer": true}`` when the wait's time came, else the handler's own keys
(an approval's ``approved``, ``decided_by``...). Previews have no one to wait for:
``preview_decision`` answers in-process (DESIGN §8).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..types import WAITING, StepDefinition, StepResult

TIMER = "timer"  # decision key: the wait's own time came (delay due, approval timed out)


def waiting(*, input: dict[str, Any], output: Any, until: datetime | None) -> StepResult:
    return StepResult(status=WAITING, input=input, output=output, wait_until=until)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def is_waiting_type(handler: object) -> bool:
    return callable(getattr(handler, "resume", None))


class WaitingStep:
    """Mixin of the handlers that wait: ``resume`` and ``preview_decision``."""

    def resume(self, step: StepDefinition, waited: StepResult, decision: dict[str, Any]) -> StepResult:
        raise NotImplementedError

    def preview_decision(self, step: StepDefinition, approvals: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The decision a preview stands in with, and the warning that says so."""
        raise NotImplementedError
