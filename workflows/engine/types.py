"""Plain data the engine works on. Built from a WorkflowVersion.definition snapshot."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from providers.types import TokenUsage

COMPLETED = "COMPLETED"
FAILED = "FAILED"
SKIPPED = "SKIPPED"
WAITING = "WAITING"  # the step waits for a decision or a timer; see steps/waiting.py


@dataclass(frozen=True)
class StepDefinition:
    name: str
    order: int
    type: str  # PROMPT | CONDITION | TRANSFORM | HTTP | APPROVAL | DELAY | WORKFLOW | MAP
    config: dict[str, Any] = field(default_factory=dict)
    retry_config: dict[str, Any] = field(default_factory=dict)
    on_error: str = "fail"
    timeout_seconds: float | None = None
    prompt: dict[str, Any] | None = None  # {"id", "name", "template", "system", "model_config"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepDefinition:
        return cls(
            name=data["name"],
            order=int(data["order"]),
            type=data["type"],
            config=dict(data.get("config") or {}),
            retry_config=dict(data.get("retry_config") or {}),
            on_error=data.get("on_error") or "fail",
            timeout_seconds=data.get("timeout_seconds"),
            prompt=data.get("prompt"),
        )


@dataclass(frozen=True)
class WorkflowDefinition:
    """What a WorkflowVersion snapshot holds, with steps sorted by order."""

    variables: list[dict[str, Any]]
    steps: list[StepDefinition]
    timeout_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowDefinition:
        steps = sorted((StepDefinition.from_dict(s) for s in data.get("steps", [])), key=lambda s: s.order)
        return cls(
            variables=list(data.get("variables", [])),
            steps=steps,
            timeout_seconds=(data.get("workflow") or {}).get("timeout_seconds"),
        )

    def step(self, name: str) -> StepDefinition:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


@dataclass(frozen=True)
class RunContext:
    """What templates see: ``input``, ``steps.<name>.output|outputs``, ``trigger``; and
    ``item``, ``index`` in a MAP step's inner step (``scope``)."""

    inputs: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=lambda: {"type": "MANUAL", "payload": None})
    scope: dict[str, Any] = field(default_factory=dict)

    def as_template_context(self) -> dict[str, Any]:
        return {**self.scope, "input": self.inputs, "steps": self.steps, "trigger": self.trigger}


@dataclass(frozen=True)
class NextAction:
    kind: str  # "continue" | "stop" | "skip_to"
    target: str | None = None

    @classmethod
    def parse(cls, text: str) -> NextAction:
        if text in ("continue", "stop"):
            return cls(text)
        if text.startswith("skip_to:") and text[len("skip_to:"):].strip():
            return cls("skip_to", text[len("skip_to:"):].strip())
        raise ValueError(f'"{text}" is not "continue", "stop" or "skip_to:<step name>".')


@dataclass
class StepResult:
    """What one attempt of one step produced. Never raised: failures are data."""

    status: str  # COMPLETED | FAILED | WAITING
    output: Any = None
    outputs: dict[str, Any] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # {type, message, step, details}
    retryable: bool = False
    retry_after: float | None = None
    model_outputs: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: TokenUsage().as_dict())
    warnings: list[str] = field(default_factory=list)
    next: NextAction = field(default_factory=lambda: NextAction("continue"))
    # WAITING only: when the wait ends by itself (a delay's time, an approval's timeout),
    # timezone-aware; None waits until resumed.
    wait_until: datetime | None = None
    # WORKFLOW only: the child run to start, {"workflow": id, "input": {...}}; the
    # orchestration starts it (and the step waits for it unless config.wait is false).
    child: dict[str, Any] | None = None
    # MAP only: the items to run the inner step over; the orchestration creates one step
    # execution per item and completes the step when they are all done.
    fan_out: list[Any] | None = None


@dataclass(frozen=True)
class Transition:
    """Where the run goes after a step: the next step, the steps jumped over, or the end."""

    next_step: StepDefinition | None
    skipped: list[StepDefinition]
    fail_run: bool = False


# (step, context) -> StepResult ; the engine calls providers through this resolver.
ProviderResolver = Callable[[str], Any]
