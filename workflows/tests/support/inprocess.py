"""Runs driven in-process without a broker: ``dispatch._send`` appends to a list what a
worker would have received (task name, args, countdown), and ``drive`` delivers what is
due now, in order, as a worker would. A module's fixture returns ``capture_broker(...)``."""
from __future__ import annotations

from promptpilot.common import task_names
from workflows.services import dispatch, orchestration

Message = tuple[str, list, float | None]


def capture_broker(monkeypatch, settings) -> list[Message]:
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "START_BATCH_SECONDS": 0, "INLINE_STEP_BUDGET_SECONDS": 0}
    messages: list[Message] = []
    monkeypatch.setattr(dispatch, "_send",
                        lambda name, args, countdown=None: messages.append((name, args, countdown)) or True)
    return messages


DRIVEN = (task_names.ADVANCE_EXECUTION, task_names.RUN_STEP, task_names.RESUME_WAIT)


def drive(sent: list[Message]) -> None:
    """Deliver every workflow message due now (no countdown), until none is left; other
    messages (e.g. events) stay in the list."""
    while due := [m for m in sent if not m[2] and m[0] in DRIVEN]:
        for message in due:
            sent.remove(message)
            name, args, _ = message
            if name == task_names.ADVANCE_EXECUTION:
                orchestration.execution_admit(execution_id=args[0])
            elif name == task_names.RUN_STEP:
                orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))
            else:
                orchestration.wait_timer_fire(step_execution_id=args[0])
