"""Waiting on the database while PostgreSQL may be restarting under the test."""
from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection

from workflows.models import ExecutionStatus, WorkflowExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow
from workflows.tests.support.providers import read_calls


def tag() -> str:
    return uuid.uuid4().hex[:8]


def db_wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """``wait_for`` that treats a dropped connection as "not yet": it is closed, and the next
    try opens a new one once the server is back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OperationalError, InterfaceError):
            connection.close()
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout} s waiting for {what}")


def all_finished(executions, timeout: float, *, alive=()) -> list[WorkflowExecution]:
    """The runs once all have ended; fails at once, with its log, if a process of ``alive``
    (ServiceProcess) exits meanwhile."""
    ids = [e.pk for e in executions]

    def finished():
        for process in alive:
            if process.proc.poll() is not None:
                raise AssertionError(f"{process.name} exited ({process.proc.returncode}):\n{process.log()[-3000:]}")
        runs = list(WorkflowExecution.objects.filter(pk__in=ids, status__in=ExecutionStatus.finished()))
        return runs if len(runs) == len(ids) else None

    runs = db_wait_for(finished, timeout, f"{len(ids)} runs to finish")
    by_id = {run.pk: run for run in runs}
    return [by_id[i] for i in ids]


def numbered_workflow(user, steps: list[dict], **fields):
    return make_workflow(user, steps=steps, variables=[{"name": "n", "type": "NUMBER", "required": True}], **fields)


def start_runs(user, workflow, n: int) -> list[WorkflowExecution]:
    return [execution_start(workflow=workflow, inputs={"n": i}, started_by=user) for i in range(n)]


def call_counts(probe_log, prompts: list[str], event: str = "call") -> dict[str, int]:
    counts = dict.fromkeys(prompts, 0)
    for call in read_calls(probe_log):
        if call["event"] == event and call["prompt"] in counts:
            counts[call["prompt"]] += 1
    return counts


def in_flight(probe_log, prompts: list[str]) -> int:
    """How many of ``prompts`` have a call started and not yet done."""
    started, done = call_counts(probe_log, prompts), call_counts(probe_log, prompts, "done")
    return sum(1 for p in prompts if started[p] > done[p])


def reaper_sweeps_started(worker) -> int:
    """How many reaper sweeps ``worker`` (a ServiceProcess) has started: Celery's own count
    of the tasks it accepted (``inspect stats``; its per-task log lines are off at INFO)."""
    from promptpilot.celery import app
    from promptpilot.common import task_names

    node = f"{worker.name}@{socket.gethostname()}"
    replies = app.control.inspect(destination=[node], timeout=2).stats() or {}
    return int(replies.get(node, {}).get("total", {}).get(task_names.REAP, 0))


def wait_for_sweeps(worker, n: int, timeout: float = 30) -> None:
    """Let ``n`` more reaper sweeps run on ``worker``: what a sweep would recover (a message
    to resend, a lease to reclaim) has had its chance, without guessing a sleep. (Counted
    as started: one more must start before the ``n``-th is surely over.)"""
    target = reaper_sweeps_started(worker) + n + 1
    db_wait_for(lambda: reaper_sweeps_started(worker) >= target, timeout, f"{n} reaper sweeps on {worker.name}")


def recovered(worker, action: str) -> int:
    """What the reaper sweeps that ``worker`` ran recovered (their ``reaper.recovered`` log
    lines), for one ``action`` of workflows.services.reaper.SweepReport."""
    lines = [json.loads(line) for line in worker.log().splitlines() if '"reaper.recovered"' in line]
    return sum(line.get(action, 0) for line in lines)
