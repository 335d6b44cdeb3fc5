"""MAP steps on real workers: items spread over two workers, one of them SIGKILLed half-way.

Provider calls are counted across processes by the probe provider's shared call log: an
item checkpointed COMPLETED is never called again; only the items in flight on the killed
worker (answered or not, but not yet checkpointed) are called a second time.
"""
from __future__ import annotations

import uuid
from collections import Counter

import pytest

from workflows.models import WorkflowStepExecution
from workflows.services.executions import execution_start
from workflows.tests.factories import make_workflow
from workflows.tests.support.providers import read_calls

from .helpers import wait_finished, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ITEMS = 50
CONCURRENCY = 10


def _map_workflow(user, tag: str, *, delay_ms: int):
    inner = {"type": "PROMPT", "config": {"template": f"map {tag} {{{{ index }}}} {{{{ item }}}}",
                                          "model": {"provider": "probe", "model": "probe-1", "delay_ms": delay_ms}}}
    return make_workflow(user, variables=[{"name": "words", "type": "JSON", "required": True}], steps=[
        {"name": "each", "type": "MAP",
         "config": {"items": "input.words", "step": inner, "concurrency": CONCURRENCY}},
    ])


def _calls(probe_log, tag: str, event: str) -> Counter:
    prefix = f"map {tag} "
    return Counter(c["prompt"] for c in read_calls(probe_log) if c["event"] == event and c["prompt"].startswith(prefix))


def _item_rows(execution_id, *, status: str) -> list[tuple[str, int]]:
    """(the prompt it rendered, index) of the MAP's item rows in ``status``."""
    rows = WorkflowStepExecution.objects.filter(execution_id=execution_id, item_index__isnull=False, status=status)
    return [(row.input["prompt"], row.item_index) for row in rows]


def test_map_of_50_items_survives_a_worker_killed_half_way_without_repeating_completed_items(user, workers, probe_log):
    tag = uuid.uuid4().hex[:8]
    words = [f"w{i}" for i in range(ITEMS)]
    workflow = _map_workflow(user, tag, delay_ms=400)
    doomed = workers("map-doomed")
    workers("map-survivor")
    execution = execution_start(workflow=workflow, inputs={"words": words}, started_by=user)

    wait_for(lambda: len(_item_rows(execution.id, status="COMPLETED")) >= ITEMS // 3, 30, "a third of the items")
    pids = {c["pid"] for c in read_calls(probe_log) if c["prompt"].startswith(f"map {tag} ")}
    assert len(pids) >= 2, "the items were spread over both workers"
    doomed.kill()  # SIGKILL to the whole worker: main process and pool children
    # Checkpointed before (or as) the worker died: these must never be called again.
    completed = [prompt for prompt, index in _item_rows(execution.id, status="COMPLETED")]
    finished = wait_finished(execution.id, timeout=45)

    assert finished.status == "COMPLETED", finished.error
    assert finished.output == [f"map {tag} {i} w{i}" for i in range(ITEMS)]
    made = _calls(probe_log, tag, "call")
    assert len(made) == ITEMS
    assert all(made[prompt] == 1 for prompt in completed), "a completed item's model call was made again"
    repeated = sum(made.values()) - ITEMS
    assert repeated <= CONCURRENCY, "only the items in flight on the killed worker are called again"
    rows = WorkflowStepExecution.objects.filter(execution_id=execution.id, item_index__isnull=False)
    assert rows.count() == ITEMS and set(rows.values_list("status", flat=True)) == {"COMPLETED"}
    assert sum(rows.values_list("lost_attempts", flat=True)) >= repeated  # a repeat is a lost attempt's


def test_map_on_a_worker_with_on_item_error_continue_and_drop(user, shared_worker):
    def run(mode: str):
        inner = {"type": "TRANSFORM", "config": {"template": "{{ item.name }}"}}
        workflow = make_workflow(user, variables=[{"name": "people", "type": "JSON", "required": True}], steps=[
            {"name": "each", "type": "MAP", "config": {"items": "input.people", "step": inner, "on_item_error": mode}},
        ])
        return execution_start(workflow=workflow, inputs={"people": [{"name": "a"}, {}, {"name": "c"}]},
                               started_by=user)

    kept, dropped = run("continue"), run("drop")
    kept, dropped = wait_finished(kept.id, timeout=30), wait_finished(dropped.id, timeout=30)
    assert (kept.status, kept.output) == ("COMPLETED", ["a", None, "c"])
    assert (dropped.status, dropped.output) == ("COMPLETED", ["a", "c"])
    assert any("Item 1 failed" in w for w in kept.warnings)
