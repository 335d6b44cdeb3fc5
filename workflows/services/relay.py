"""Wake-up messages for new runs, sent in batches by a background thread of each process.

``execution_start`` commits the PENDING execution before it answers: that row is the
durable record of the work (the outbox). The message asking a worker to admit it is only
a wake-up call, and one broker publish per start cost the webhook receiver about a third
of its CPU (bench/README.md, "Webhooks benchmark"). So, after the commit, the id is queued
here, and one thread per process sends ``workflows.advance_executions`` with every id
queued since its last send: at once when it has been idle for ``START_BATCH_SECONDS``,
else as soon as that much time has passed since the previous send. The request does not
wait for the broker at all.

A message lost on the way (the process killed before it sent, the broker down) changes
nothing durable: the reaper sends the message of any run still PENDING after
``ENQUEUE_GRACE_SECONDS`` (services/reaper.py). A process that exits normally sends what
it still holds first. ``START_BATCH_SECONDS = 0`` turns batching off: every start is sent
on its own, at commit, by the thread that made it.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

from django.conf import settings

from promptpilot.common import task_names

logger = logging.getLogger(__name__)

TASK = task_names.ADVANCE_EXECUTIONS
MAX_BATCH = 200  # ids per message: keeps a message small and one worker's admission loop short


class StartRelay:
    """The ids waiting for their wake-up message in this process, and the thread sending them."""

    def __init__(self, send: Callable[[str, list], bool], linger_seconds: float) -> None:
        self._send = send
        self.linger_seconds = linger_seconds
        self._cond = threading.Condition()
        self._ids: list[str] = []
        self._last_sent = 0.0  # time.monotonic() of the last send
        self._sending = 0  # batches taken off the queue and not sent yet (for flush)
        self._flushing = 0  # callers of flush waiting: no lingering meanwhile
        self._idle = False  # the thread waits for ids (as opposed to lingering before a send)
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None

    def add(self, execution_id: uuid.UUID | str) -> None:
        with self._cond:
            if self._pid != os.getpid():  # forked (gunicorn, prefork pool): the thread stayed behind
                self._pid, self._thread, self._ids, self._sending = os.getpid(), None, [], 0
            self._ids.append(str(execution_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="promptpilot-start-relay", daemon=True)
                self._thread.start()
            elif self._idle:
                # Only an idle thread needs waking: a lingering one wakes at its deadline anyway,
                # and waking it for each start would cost every request a thread switch.
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is queued now and wait until it has been sent (process exit, tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._pid != os.getpid() or self._thread is None:
                return not self._ids
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._ids or self._sending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._flushing -= 1
        return True

    def _take(self) -> list[str]:
        """The next batch, once due."""
        with self._cond:
            while True:
                if not self._ids:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                wait = self._last_sent + self.linger_seconds - time.monotonic()
                if wait <= 0 or self._flushing:
                    batch, self._ids = self._ids[:MAX_BATCH], self._ids[MAX_BATCH:]
                    self._sending += 1
                    return batch
                self._cond.wait(wait)  # more ids may join this batch meanwhile

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                self._send(TASK, [batch])  # logs and returns False when the broker is down: the reaper re-sends
            except Exception:  # never let the thread die: later starts still need it
                logger.exception("relay.send_failed", extra={"executions": len(batch)})
            finally:
                with self._cond:
                    self._last_sent = time.monotonic()
                    self._sending -= 1
                    self._cond.notify_all()


_relay: StartRelay | None = None
_relay_lock = threading.Lock()


def relay() -> StartRelay:
    global _relay
    if _relay is None:
        with _relay_lock:
            if _relay is None:
                from . import dispatch

                # dispatch._send looked up at each send (tests replace it)
                _relay = StartRelay(lambda name, args: dispatch._send(name, args),
                                    float(settings.PROMPTPILOT["START_BATCH_SECONDS"]))
                atexit.register(_relay.flush)
    return _relay


def relay_flush(timeout: float = 10.0) -> bool:
    """Send what this process still holds (a worker process about to exit, tests)."""
    return _relay.flush(timeout) if _relay is not None else True
