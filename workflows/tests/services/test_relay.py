"""New runs' wake-up messages, batched per process (workflows/services/relay.py).

The PENDING row is committed before the relay hears of the run; these tests check that
the relay sends every id it was given, in few messages, never before the commit, and that
a worker admitting a batch spreads it over the broker and finishes every run.
"""
from __future__ import annotations

import threading
import time

import pytest
from django.db import transaction

from workflows.models import ExecutionStatus, WorkflowExecution
from workflows.services import orchestration, relay
from workflows.services.executions import execution_start
from workflows.services.relay import MAX_BATCH, StartRelay
from workflows.tests.factories import make_workflow


class Recorder:
    """A send function that records (task, ids) and can be told to fail or to block."""

    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.fail_first = fail_first
        self.sent = threading.Condition()

    def __call__(self, task: str, args: list) -> bool:
        assert task == "workflows.advance_executions"
        with self.sent:
            if self.fail_first:
                self.fail_first -= 1
                raise ConnectionError("broker down")
            self.batches.append(list(args[0]))
            self.sent.notify_all()
        return True

    def wait_for(self, count: int, timeout: float = 5) -> list[str]:
        deadline = time.monotonic() + timeout
        with self.sent:
            while sum(map(len, self.batches)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"only {self.batches} sent"
                self.sent.wait(left)
        return [i for batch in self.batches for i in batch]


@pytest.mark.single_pass
def test_an_idle_relay_sends_a_start_at_once():
    send = Recorder()
    relay_ = StartRelay(send, linger_seconds=30)  # a long linger: only idleness can explain a quick send
    relay_.add("a")
    assert send.wait_for(1, timeout=2) == ["a"]


@pytest.mark.single_pass
def test_starts_arriving_together_share_one_message():
    send = Recorder()
    relay_ = StartRelay(send, linger_seconds=0.3)
    relay_.add("first")  # idle: sent at once, and the next send waits for the linger
    send.wait_for(1)
    for n in range(50):
        relay_.add(f"id{n}")
    assert send.wait_for(51) == ["first", *(f"id{n}" for n in range(50))]
    assert [len(b) for b in send.batches] == [1, 50]


@pytest.mark.single_pass
def test_flush_sends_what_is_held_without_waiting_for_the_linger():
    send = Recorder()
    relay_ = StartRelay(send, linger_seconds=60)
    relay_.add("first")
    send.wait_for(1)
    relay_.add("second")
    relay_.add("third")
    assert relay_.flush(timeout=5)
    assert send.batches == [["first"], ["second", "third"]]


@pytest.mark.single_pass
def test_a_big_backlog_is_split_into_bounded_messages():
    send = Recorder()
    relay_ = StartRelay(send, linger_seconds=60)
    relay_.add("first")
    send.wait_for(1)
    for n in range(MAX_BATCH * 2 + 5):
        relay_.add(str(n))
    assert relay_.flush(timeout=5)
    assert [len(b) for b in send.batches] == [1, MAX_BATCH, MAX_BATCH, 5]


@pytest.mark.single_pass
def test_a_failed_send_does_not_stop_the_relay():
    send = Recorder(fail_first=1)
    relay_ = StartRelay(send, linger_seconds=0)
    relay_.add("lost")  # the reaper re-sends a PENDING run whose message was lost
    time.sleep(0.2)
    relay_.add("later")
    assert send.wait_for(1) == ["later"]


# --- with the database -------------------------------------------------------------------


@pytest.fixture
def captured(broker_messages):
    """The process relay, sending into a list instead of the broker (batching on)."""
    yield broker_messages(0.05)
    relay.relay_flush()


@pytest.fixture
def workflow(user):
    return make_workflow(
        user,
        variables=[{"name": "topic", "type": "STRING", "required": True}],
        steps=[{"name": "shout", "type": "TRANSFORM", "config": {"template": "{{ input.topic | upper }}"}},
               {"name": "wrap", "type": "TRANSFORM", "config": {"template": "<{{ steps.shout.output }}>"}}],
    )


@pytest.mark.single_pass
@pytest.mark.django_db(transaction=True)
def test_runs_started_together_are_sent_in_one_batch_after_their_commit(captured, workflow, user):
    with transaction.atomic():
        first = execution_start(workflow=workflow, inputs={"topic": "a"}, started_by=user)
        assert relay.relay_flush() and captured == [], "nothing is sent before the commit"
    relay.relay_flush()
    rest = [execution_start(workflow=workflow, inputs={"topic": str(n)}, started_by=user) for n in range(5)]
    relay.relay_flush()
    ids = [str(e.id) for e in (first, *rest)]
    assert all(name == "workflows.advance_executions" for name, _ in captured)
    assert [i for _, (batch,) in captured for i in batch] == ids
    assert len(captured) < len(ids), "starts made together share messages"


@pytest.mark.single_pass
@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_start_is_never_sent(captured, workflow, user):
    with pytest.raises(RuntimeError), transaction.atomic():
        execution_start(workflow=workflow, inputs={"topic": "a"}, started_by=user)
        raise RuntimeError("the caller's transaction fails")
    relay.relay_flush()
    assert captured == [] and not WorkflowExecution.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_admitted_and_spread_over_the_broker(broker_messages, workflow, user):
    sent = broker_messages(0)
    runs = [execution_start(workflow=workflow, inputs={"topic": t}, started_by=user) for t in ("x", "y", "z")]
    sent.clear()
    missing = "00000000-0000-0000-0000-000000000000"  # a bad id in the batch stops nothing

    orchestration.executions_admit(execution_ids=[str(runs[0].id), missing, str(runs[1].id), str(runs[2].id)])

    states = {str(e.id): e for e in WorkflowExecution.objects.all()}
    # The last run of the batch went on in this worker, to the end.
    assert states[str(runs[2].id)].status == ExecutionStatus.COMPLETED
    assert states[str(runs[2].id)].output == "<Z>"
    # The others were admitted and their first steps handed to the broker, for any worker.
    assert [states[str(r.id)].status for r in runs[:2]] == [ExecutionStatus.RUNNING] * 2
    assert [name for name, _ in sent] == ["workflows.run_step", "workflows.run_step"]
    while sent:  # deliver them as workers would
        name, args = sent.pop(0)
        orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))
    assert [WorkflowExecution.objects.get(pk=r.id).output for r in runs] == ["<X>", "<Y>", "<Z>"]
