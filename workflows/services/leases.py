"""Leases of the step attempts a worker process is running, renewed by one thread.

A claimed attempt's lease (``lease_expires_at``) is set by the claim itself; this thread
extends it every third of the lease while the attempt runs, so that only attempts whose
worker stopped (killed, frozen, cut off from the database) expire and are re-run by the
reaper. One thread per process, not one per attempt: most steps end long before their
first renewal, and starting a thread (with its own database connection) for each of
them cost more than the step.
"""
from __future__ import annotations

import logging
import operator
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import reduce

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from ..models import StepExecutionStatus, WorkflowStepExecution

logger = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # step execution id → attempt being run here
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @contextmanager
    def holding(self, step_execution_id: uuid.UUID | str, attempt: int) -> Iterator[None]:
        key = str(step_execution_id)
        with self._lock:
            self._held[key] = attempt
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(key) == attempt:
                    del self._held[key]

    def held(self) -> dict[str, int]:
        with self._lock:
            return dict(self._held)

    def _ensure_thread(self) -> None:
        # A forked pool child inherits the object but not the thread.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            lease = float(settings.PROMPTPILOT["STEP_LEASE_SECONDS"])
            time.sleep(lease / 3)
            held = self.held()
            if held:
                self.renew(held, lease)

    def renew(self, held: dict[str, int], lease: float) -> None:
        """Extend every held attempt's lease; an attempt that was fenced off (re-queued,
        cancelled) is left alone and its late result will be rejected at checkpoint."""
        try:
            expires = timezone.now() + timedelta(seconds=lease)
            # One statement for every attempt held (a worker may hold hundreds at once).
            still_ours = Q(status=StepExecutionStatus.RUNNING) & reduce(
                operator.or_, (Q(pk=step_execution_id, attempt=attempt) for step_execution_id, attempt in held.items()))
            renewed = WorkflowStepExecution.objects.filter(still_ours).update(lease_expires_at=expires)
            if renewed < len(held):
                kept = {str(pk) for pk in WorkflowStepExecution.objects.filter(still_ours).values_list("pk", flat=True)}
                # An attempt that ended here since the snapshot (and checkpointed) was not lost.
                still_held = self.held()
                for step_execution_id, attempt in held.items():
                    if step_execution_id not in kept and still_held.get(step_execution_id) == attempt:
                        logger.info("step.lease_lost", extra={"step_execution_id": step_execution_id,
                                                              "attempt": attempt})
        except Exception:  # renewing must never kill the worker; the lease just lapses
            logger.exception("step.lease_renewal_failed")
        finally:
            connection.close()  # this thread renews rarely; don't hold a connection between rounds


keeper = LeaseKeeper()
