"""A Celery pool of processes that each run many tasks in threads.

Why: a step attempt spends nearly all its time waiting on a model, so a thread pool
keeps hundreds of them in flight in one process; but Python runs one thread at a time
per process, so the rendering, JSON and bookkeeping of those attempts use one core
however many the machine has (bench/README.md, "Runtime"). This pool forks
``processes`` children when the worker starts, each running up to ``threads`` tasks at
once in a thread pool, and keeps the broker's work (receiving, acknowledging, pings) in
the parent: one ``celery -A promptpilot worker`` uses every core.

Nothing about delivery changes: messages are acknowledged late, by the parent, when the
child reports the task done. A child that dies (SIGKILL, out of memory) has its tasks
reported lost (``WorkerLostError``: ``reject_on_worker_lost`` puts them back on the
queue) and a new child takes its place, after a pause that doubles while children keep
dying. A warm shutdown (SIGTERM to the parent) lets every child finish the tasks it
holds; children ignore SIGTERM themselves (a whole process group may get it) and die
with the parent if it is killed (``PR_SET_PDEATHSIG``, as Celery's prefork children do).
Celery's time limits are not enforced here, as in its thread pool: a step's timeout and
its lease bound a task (workflows/tasks.py).
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from billiard import get_context
from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from celery import signals
from celery.concurrency.base import BasePool

logger = logging.getLogger(__name__)

_ACCEPTED, _DONE, _FAILED = "accepted", "done", "failed"
_STOP = None
RESTART_DELAY_SECONDS = (1.0, 30.0)  # first pause before a dead child is replaced, and the longest
STEADY_AFTER_SECONDS = 60.0  # a child up this long resets the pause


class _Job:
    __slots__ = ("id", "callback", "error_callback", "accept_callback", "done", "__weakref__")

    def __init__(self, job_id: int, callback, error_callback, accept_callback) -> None:
        self.id = job_id
        self.callback, self.error_callback, self.accept_callback = callback, error_callback, accept_callback
        self.done = threading.Event()

    # What Celery keeps of an apply (Request._apply_result): it may wait on it.
    def wait(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)

    def get(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)


class _Child:
    """One forked process, the pipe to it and the jobs it holds."""

    def __init__(self, index: int, process, conn) -> None:
        self.index, self.process, self.conn = index, process, conn
        self.jobs: dict[int, _Job] = {}
        self.send_lock = threading.Lock()
        self.started = time.monotonic()
        self.alive = True
        self.reader: threading.Thread | None = None


class ProcessThreadPool(BasePool):
    """``limit`` (the worker's concurrency) tasks at once in all, spread over
    ``processes`` children of ``ceil(limit / processes)`` threads each."""

    body_can_be_buffer = False  # the body crosses a pipe
    signal_safe = False
    task_join_will_block = True

    def __init__(self, limit=None, *args, processes: int | None = None, initargs=(), **options) -> None:
        super().__init__(limit, *args, **options)
        from django.conf import settings

        self.processes = max(1, int(processes or settings.PROMPTPILOT["WORKER_PROCESSES"]))
        self.threads = max(1, -(-int(self.limit or 1) // self.processes))
        self.app, self.hostname = (tuple(initargs) + (None, None))[:2]
        self._children: list[_Child] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._restart_delay = RESTART_DELAY_SECONDS[0]
        self._stopping = threading.Event()

    # --- lifecycle (the worker's Pool bootstep) ---------------------------------------

    def on_start(self) -> None:
        from django.db import connections

        connections.close_all()  # no socket of the parent's may be shared with a child
        for index in range(self.processes):
            self._children.append(self._spawn(index))

    def on_stop(self) -> None:
        """Warm shutdown: every child finishes the tasks it holds, then exits."""
        self._stopping.set()
        for child in list(self._children):
            self._send(child, _STOP)
        for child in list(self._children):
            child.process.join()
            if child.reader is not None:  # its last reports (acknowledgements) delivered
                child.reader.join(10)
        super().on_stop()

    def on_terminate(self) -> None:
        self._stopping.set()
        for child in list(self._children):
            if child.process.is_alive():
                child.process.kill()
        for child in list(self._children):
            child.process.join(5)

    def on_close(self) -> None:
        self._stopping.set()

    # --- tasks --------------------------------------------------------------------------

    def on_apply(self, target, args=None, kwargs=None, callback=None, accept_callback=None,
                 error_callback=None, **_: Any) -> _Job:
        job = _Job(next(self._ids), callback, error_callback, accept_callback)
        while True:
            with self._lock:
                live = [c for c in self._children if c.alive]
                # The least busy child: no child holds more than its threads while the
                # worker's prefetch (its concurrency) bounds the jobs in flight.
                child = min(live, key=lambda c: len(c.jobs)) if live else None
                if child is not None:
                    child.jobs[job.id] = job
            if child is None:
                _report_lost(job, "no worker process is running")
                return job
            if self._send(child, (job.id, target, tuple(args or ()), dict(kwargs or {}))):
                return job
            with self._lock:  # that child just died: its reader reports its other jobs
                child.jobs.pop(job.id, None)

    def _send(self, child: _Child, message) -> bool:
        try:
            with child.send_lock:
                child.conn.send(message)
            return True
        except (OSError, EOFError, ValueError):
            child.alive = False
            return False

    # --- children -------------------------------------------------------------------------

    def _spawn(self, index: int) -> _Child:
        parent_end, child_end = get_context("fork").Pipe(duplex=True)
        process = get_context("fork").Process(
            target=_child_main, args=(child_end, self.app, self.hostname, self.threads),
            name=f"promptpilot-worker-{index}", daemon=True)
        process.start()
        child_end.close()
        child = _Child(index, process, parent_end)
        child.reader = threading.Thread(target=self._read, args=(child,), name=f"pool-reader-{index}", daemon=True)
        child.reader.start()
        return child

    def _read(self, child: _Child) -> None:
        """Deliver what one child reports, until its pipe closes; then report what it held
        as lost and start another in its place (unless the worker is stopping)."""
        while True:
            try:
                kind, job_id, payload = child.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                job = child.jobs.get(job_id) if kind == _ACCEPTED else child.jobs.pop(job_id, None)
            if job is None:
                continue
            try:
                if kind == _ACCEPTED:
                    if job.accept_callback:
                        job.accept_callback(*payload)
                elif kind == _DONE:
                    job.done.set()
                    if job.callback:
                        job.callback(payload)
                else:
                    job.done.set()
                    if job.error_callback:
                        job.error_callback(payload)
            except Exception:  # a callback's failure must not stop this child's reports
                logger.exception("worker_pool.callback_failed", extra={"job": job_id})
        self._child_gone(child)

    def _child_gone(self, child: _Child) -> None:
        child.alive = False
        child.process.join(5)
        with self._lock:
            lost, child.jobs = list(child.jobs.values()), {}
        for job in lost:
            _report_lost(job, f"worker process {child.process.pid} exited with {child.process.exitcode}")
        if self._stopping.is_set() or self._state not in (None, self.RUN):
            return
        if time.monotonic() - child.started > STEADY_AFTER_SECONDS:
            self._restart_delay = RESTART_DELAY_SECONDS[0]
        delay = self._restart_delay
        self._restart_delay = min(self._restart_delay * 2, RESTART_DELAY_SECONDS[1])
        logger.error("worker_pool.child_died", extra={
            "pid": child.process.pid, "exitcode": child.process.exitcode, "tasks_lost": len(lost),
            "restart_in_seconds": delay})
        if self._stopping.wait(delay):
            return
        replacement = self._spawn(child.index)
        with self._lock:
            self._children = [replacement if c is child else c for c in self._children]

    def _get_info(self) -> dict[str, Any]:
        info = super()._get_info()
        with self._lock:
            info.update({
                "processes": [c.process.pid for c in self._children if c.alive],
                "threads-per-process": self.threads,
                "in-flight": sum(len(c.jobs) for c in self._children),
            })
        return info

    @property
    def num_processes(self) -> int:
        return int(self.limit or 1)


def _report_lost(job: _Job, why: str) -> None:
    try:
        raise WorkerLostError(why)
    except WorkerLostError:
        einfo = ExceptionInfo()
    job.done.set()
    if job.error_callback:
        job.error_callback(einfo)


# --- in the child -------------------------------------------------------------------------


def _child_main(conn, app, hostname: str, threads: int) -> None:
    """A pool child: the same start as a Celery prefork child, then run every job it is
    sent in a thread of its own pool, until told to stop or its parent goes."""
    from celery.concurrency.prefork import process_initializer
    from django.conf import settings

    from promptpilot.common.db import pool_connections

    process_initializer(app, hostname)  # pdeathsig, app, tracers, worker_process_init
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent decides when its children stop
    # Its threads take their PostgreSQL connections from one bounded pool of its own
    # (a pool does not survive a fork, so it is made here, before the first query).
    pool_connections(options=settings.PROMPTPILOT["DB_POOL"], application_name=f"promptpilot worker {hostname} pid {os.getpid()}")
    send_lock = threading.Lock()

    def report(kind: str, job_id: int, payload) -> None:
        try:
            with send_lock:
                conn.send((kind, job_id, payload))
        except (OSError, EOFError):
            pass  # the parent is gone: pdeathsig ends this process

    def run(job_id: int, target, args: tuple, kwargs: dict) -> None:
        report(_ACCEPTED, job_id, (os.getpid(), time.monotonic()))
        try:
            result = target(*args, **kwargs)
        except BaseException:  # what the tracer itself did not catch (it catches task errors)
            report(_FAILED, job_id, ExceptionInfo())
        else:
            report(_DONE, job_id, result)

    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="step")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is _STOP:
            break
        executor.submit(run, *message)
    executor.shutdown(wait=True)
    # Runs this process started (schedules, events) send their wake-up messages first;
    # a pool child skips atexit handlers.
    signals.worker_process_shutdown.send(sender=hostname, pid=os.getpid(), exitcode=0)
