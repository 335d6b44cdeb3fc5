"""Hand work to the broker. The database is the source of truth; the broker is a backstop.

Every send happens after the transaction that recorded the work commits, and a failed
send is logged, not raised: the work is already durable as a PENDING row, and the
reaper sends it again (see ``services/reaper.py``).
"""
from __future__ import annotations

import logging
import uuid

from django.db import transaction

logger = logging.getLogger(__name__)


def _send(task_name: str, args: list, *, countdown: float | None = None) -> bool:
    from promptpilot.celery import app

    try:
        app.send_task(task_name, args=args, countdown=countdown or None)
        return True
    except Exception as exc:  # broker down, DNS, timeouts: the reaper recovers
        logger.warning("dispatch.send_failed", extra={"task": task_name, "task_args": args, "error": str(exc)})
        return False


def enqueue_execution(execution_id: uuid.UUID) -> None:
    """Ask a worker to admit (start) a PENDING execution, once this transaction commits."""
    transaction.on_commit(lambda: _send("workflows.advance_execution", [str(execution_id)]))


def enqueue_step(step_execution_id: uuid.UUID, attempt: int, *, countdown: float = 0) -> None:
    """Ask a worker to run one attempt of one step, once this transaction commits."""
    transaction.on_commit(
        lambda: _send("workflows.run_step", [str(step_execution_id), attempt], countdown=countdown)
    )
