"""Hand work to the broker. The database is the source of truth; the broker is a backstop.

Every send happens after the transaction that recorded the work commits, and a failed
send is logged, not raised: the work is already durable as a PENDING row, and the
reaper sends it again (see ``services/reaper.py``).

A task that is running steps may open a ``continuation``: the next step due at once is
then handed to that task instead of the broker (after the same commit), and the task
claims it exactly as it would claim a delivered message. Nothing else changes: the step
row is PENDING and committed first, so if the task dies before claiming it, the reaper
finds a PENDING step without a message and sends it.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import transaction

from promptpilot.common import task_names

from .relay import relay

logger = logging.getLogger(__name__)
_local = threading.local()


class Continuation:
    """The one next step a running task keeps for itself, while its time budget lasts."""

    def __init__(self, budget_seconds: float) -> None:
        self.deadline = time.monotonic() + budget_seconds
        self.next: object | None = None  # (step execution id, attempt), or a transitions.Claimed

    def can_keep(self) -> bool:
        """Whether this task may take one more step (nothing kept yet, budget left)."""
        return self.next is None and time.monotonic() < self.deadline

    def offer(self, step_execution_id: uuid.UUID | str, attempt: int) -> bool:
        if not self.can_keep():
            return False
        self.next = (str(step_execution_id), attempt)
        return True

    def keep(self, claimed: object) -> None:
        """Keep a step this task already claimed (its row is RUNNING with this task's lease)."""
        self.next = claimed

    def take(self) -> object | None:
        taken, self.next = self.next, None
        return taken


def current_continuation() -> Continuation | None:
    return getattr(_local, "continuation", None)


@contextmanager
def continuation(budget_seconds: float) -> Iterator[Continuation | None]:
    """Within this block, the first step sent without a countdown goes to the caller
    (``Continuation.take``) instead of the broker. A budget of 0 (or a nested block)
    changes nothing: every step is sent."""
    if budget_seconds <= 0 or getattr(_local, "continuation", None) is not None:
        yield None
        return
    _local.continuation = holder = Continuation(budget_seconds)
    try:
        yield holder
    finally:
        _local.continuation = None
        leftover = holder.take()
        # The caller stopped early (an exception): don't strand a PENDING step. (A step claimed
        # in advance is RUNNING under this worker's lease: when the lease lapses, the reaper
        # sends it again.)
        if isinstance(leftover, tuple):
            _send(task_names.RUN_STEP, list(leftover))


def _send(task_name: str, args: list, *, countdown: float | None = None) -> bool:
    from promptpilot.celery import app

    try:
        app.send_task(task_name, args=args, countdown=countdown or None)
        return True
    except Exception as exc:  # broker down, DNS, timeouts: the reaper recovers
        logger.warning("dispatch.send_failed", extra={"task": task_name, "task_args": args, "error": str(exc)})
        return False


def enqueue_execution(execution_id: uuid.UUID) -> None:
    """Ask a worker to admit (start) a PENDING execution, once this transaction commits:
    batched with this process's other starts by default (see ``services/relay.py``)."""
    transaction.on_commit(lambda: _send_start(execution_id))


def _send_start(execution_id: uuid.UUID) -> None:
    linger = float(settings.PROMPTPILOT["START_BATCH_SECONDS"])
    if linger <= 0:
        _send(task_names.ADVANCE_EXECUTION, [str(execution_id)])
        return
    batcher = relay()
    batcher.linger_seconds = linger
    batcher.add(execution_id)


def enqueue_wait_timer(step_execution_id: uuid.UUID, *, countdown: float) -> None:
    """Wake a WAITING step when its time comes, once this transaction commits. Only waits
    ending within ``MAX_BACKOFF_SECONDS`` are sent (longer countdowns would outlive the
    broker's visibility timeout); the reaper sends the others when they are near, and
    resumes any whose message was lost. The database's due time is the truth."""
    if countdown > float(settings.PROMPTPILOT["MAX_BACKOFF_SECONDS"]):
        return
    transaction.on_commit(lambda: _send(task_names.RESUME_WAIT, [str(step_execution_id)], countdown=countdown))


def enqueue_step(step_execution_id: uuid.UUID, attempt: int, *, countdown: float = 0) -> None:
    """Ask a worker to run one attempt of one step, once this transaction commits (or
    keep it for the running task's continuation, when it has one and the step is due now)."""

    def send() -> None:
        holder = getattr(_local, "continuation", None)
        if not countdown and holder is not None and holder.offer(step_execution_id, attempt):
            return
        _send(task_names.RUN_STEP, [str(step_execution_id), attempt], countdown=countdown)

    transaction.on_commit(send)
