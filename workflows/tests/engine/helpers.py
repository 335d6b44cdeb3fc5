"""Small builders and a scripted provider for engine unit tests (no database)."""
from __future__ import annotations

from typing import Any

from providers.types import ModelRequest, ModelResponse
from workflows.engine.types import RunContext, StepDefinition, WorkflowDefinition

ECHO = {"provider": "echo", "model": "echo"}


def make_step(name: str, order: int, step_type: str = "TRANSFORM", **fields: Any) -> StepDefinition:
    return StepDefinition.from_dict({"name": name, "order": order, "type": step_type, **fields})


def make_definition(*steps: dict[str, Any], variables: list[dict[str, Any]] | None = None) -> WorkflowDefinition:
    return WorkflowDefinition.from_dict({"variables": variables or [], "steps": list(steps)})


def make_context(inputs: dict[str, Any] | None = None, **steps: dict[str, Any]) -> RunContext:
    return RunContext(inputs=inputs or {}, steps=dict(steps))


class ScriptedAdapter:
    """Answers with fixed content or raises a fixed error, and records every request."""

    name = "scripted"

    def __init__(
        self,
        content: str = "ok",
        *,
        error: Exception | None = None,
        tokens: dict[str, int] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.content = content
        self.error = error
        self.tokens = tokens or {"input": 3, "output": 2, "total": 5}
        self.warnings = warnings or []
        self.requests: list[ModelRequest] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return ModelResponse(
            content=self.content,
            tokens=dict(self.tokens),
            latency_ms=7,
            finish_reason="stop",
            request_id="req-1",
            warnings=list(self.warnings),
        )

    def resolver(self, name: str) -> ScriptedAdapter:
        return self
