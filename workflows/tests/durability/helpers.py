from __future__ import annotations

import time
from collections.abc import Callable

from promptpilot.celery import app
from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.tests.support.providers import read_calls


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout} s waiting for {what}")


def wait_finished(execution_id, timeout: float = 60) -> WorkflowExecution:
    return wait_for(
        lambda: WorkflowExecution.objects.filter(pk=execution_id, status__in=["COMPLETED", "FAILED", "CANCELLED"]).first(),
        timeout,
        f"execution {execution_id} to finish",
    )


def calls_for(probe_log, prompt: str, event: str = "call") -> list[dict]:
    return [c for c in read_calls(probe_log) if c["prompt"] == prompt and c["event"] == event]


def step_run(execution_id, name: str) -> WorkflowStepExecution | None:
    return WorkflowStepExecution.objects.filter(execution_id=execution_id, step_name=name).first()


def deliver_step_task(step_execution: WorkflowStepExecution, attempt: int | None = None) -> None:
    """Publish the run_step message again, as a broker redelivery would."""
    app.send_task("workflows.run_step", args=[str(step_execution.id), attempt or step_execution.attempt])
