"""Execution lifecycle: start, cancel, retry. (Being written: see durable orchestration.)"""
from __future__ import annotations

from typing import Any

from ..models import Workflow, WorkflowExecution


def execution_start(
    *,
    workflow: Workflow,
    inputs: dict[str, Any],
    trigger=None,
    trigger_type: str = "MANUAL",
    started_by=None,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> WorkflowExecution:
    """Validate inputs, create a PENDING execution pinned to the current version and
    enqueue it after commit. Raises InputValidationFailed (400) / WorkflowInactive (409).
    With an already used ``idempotency_key`` returns the first execution, with
    ``execution.was_replayed = True`` (False otherwise)."""
    raise NotImplementedError


def execution_cancel(*, execution: WorkflowExecution, user=None) -> WorkflowExecution:
    """Cancel a PENDING or RUNNING execution. Raises ExecutionFinished (409) otherwise."""
    raise NotImplementedError


def execution_retry(*, execution: WorkflowExecution, user=None) -> WorkflowExecution:
    """Start a new execution (trigger_type RETRY) from the failed step of a FAILED or
    CANCELLED one, reusing earlier outputs. Raises ExecutionNotRetryable (409) otherwise."""
    raise NotImplementedError
