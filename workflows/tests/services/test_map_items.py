"""MAP steps through the transitions, in-process and without a broker: the fan-out, the
concurrency bound, the join, fencing, on_item_error, retries, the reaper and cancel.

``dispatch._send`` is replaced by a list (workflows/tests/support/inprocess.py), so each
test sees exactly which item attempts a worker would have been sent, and delivers them.
"""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from promptpilot.common import task_names
from workflows.models import WorkflowExecution, WorkflowStepExecution
from workflows.services import orchestration, transitions
from workflows.services.executions import execution_cancel, execution_start
from workflows.services.reaper import reaper_sweep
from workflows.tests.factories import make_workflow
from workflows.tests.support.inprocess import capture_broker, drive

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run, as in a worker


@pytest.fixture
def sent(monkeypatch, settings):
    return capture_broker(monkeypatch, settings)


def map_step(items: str, inner: dict, **config) -> dict:
    return {"name": "each", "type": "MAP", "config": {"items": items, "step": inner, **config}}


def transform(template: str, **config) -> dict:
    return {"type": "TRANSFORM", "config": {"template": template, **config}}


def echo(template: str, **params) -> dict:
    return {"type": "PROMPT", "config": {"template": template, "model": {"provider": "echo", "model": "echo", **params}}}


def items(execution) -> list[WorkflowStepExecution]:
    return list(WorkflowStepExecution.objects.filter(execution=execution, item_index__isnull=False)
                .order_by("item_index"))


def parent(execution) -> WorkflowStepExecution:
    return WorkflowStepExecution.objects.get(execution=execution, step_name="each", item_index__isnull=True)


def item_messages(sent) -> list:
    return [m for m in sent if m[0] == task_names.RUN_STEP]


def deliver_one(sent) -> None:
    message = next(m for m in sent if m[0] in (task_names.ADVANCE_EXECUTION, task_names.RUN_STEP) and not m[2])
    sent.remove(message)
    name, args, _ = message
    if name == task_names.ADVANCE_EXECUTION:
        orchestration.execution_admit(execution_id=args[0])
    else:
        orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))


def fan_out(sent) -> None:
    """Admit the run, then run the MAP step's own attempt: it creates the items and sends the first."""
    deliver_one(sent)
    deliver_one(sent)


def start(user, steps, variables=None, inputs=None):
    workflow = make_workflow(user, steps=steps, variables=variables or [])
    return execution_start(workflow=workflow, inputs=inputs or {}, started_by=user)


WORDS = [{"name": "words", "type": "JSON", "required": True}]


def test_map_runs_each_item_as_its_own_row_and_completes_with_outputs_in_item_order(user, sent):
    execution = start(user, [
        map_step("input.words", transform("{{ index }}:{{ item | upper }}"), concurrency=2),
        {"name": "after", "type": "TRANSFORM", "config": {"template": "{{ steps.each.output | join(',') }}"}},
    ], WORDS, {"words": ["a", "b", "c", "d", "e"]})
    drive(sent)

    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    assert execution.output == "0:A,1:B,2:C,3:D,4:E"
    rows = items(execution)
    assert [r.item_index for r in rows] == [0, 1, 2, 3, 4]
    assert all(r.status == "COMPLETED" and r.step_type == "TRANSFORM" for r in rows)
    assert rows[2].input["item"] == "c" and rows[2].input["index"] == 2
    map_row = parent(execution)
    assert map_row.status == "COMPLETED"
    assert map_row.output == ["0:A", "1:B", "2:C", "3:D", "4:E"]
    assert map_row.input == {"items": "input.words", "count": 5}


def test_no_more_than_concurrency_items_are_in_flight_and_each_end_sends_the_next(user, sent):
    execution = start(user, [map_step("input.words", transform("{{ item }}"), concurrency=3)],
                      WORDS, {"words": list("abcdefgh")})
    fan_out(sent)
    assert len(item_messages(sent)) == 3
    seen_in_flight = []
    while item_messages(sent):
        deliver_one(sent)
        in_flight = [r for r in items(execution) if r.status == "RUNNING"
                     or (r.status == "PENDING" and r.available_at is not None)]
        seen_in_flight.append(len(in_flight))
        assert len(in_flight) == len(item_messages(sent)) <= 3
    assert max(seen_in_flight) == 3
    execution.refresh_from_db()
    assert execution.status == "COMPLETED"
    assert execution.output == list("abcdefgh")


def test_tokens_of_items_are_summed_on_the_map_step_and_the_run(user, sent):
    execution = start(user, [map_step("input.words", echo("say {{ item }}"))], WORDS, {"words": ["one", "two", "three"]})
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    item_totals = sum(r.tokens["total"] for r in items(execution))
    assert item_totals > 0
    assert parent(execution).tokens["total"] == item_totals
    assert execution.aggregate_tokens["total"] == item_totals  # counted once: by the items, not again by the MAP
    first = items(execution)[0]
    assert first.input["prompt"] == "say one" and first.input["item"] == "one"
    assert "variables" not in first.input  # the run's input (every item) is not copied onto each item's row


NAMED = [{"name": "people", "type": "JSON", "required": True}]
PEOPLE = {"people": [{"name": "ann"}, {"nom": "bob"}, {"name": "cy"}]}  # item 1 has no name: a TemplateError


def test_on_item_error_continue_gives_null_for_the_failed_item_and_names_it_in_warnings(user, sent):
    execution = start(user, [map_step("input.people", transform("{{ item.name }}"), on_item_error="continue")],
                      NAMED, PEOPLE)
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    assert execution.output == ["ann", None, "cy"]
    assert any("Item 1 failed with TemplateError" in w for w in parent(execution).warnings)
    assert any("Item 1 failed" in w for w in execution.warnings)


def test_on_item_error_drop_leaves_the_failed_item_out(user, sent):
    execution = start(user, [map_step("input.people", transform("{{ item.name }}"), on_item_error="drop")],
                      NAMED, PEOPLE)
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    assert execution.output == ["ann", "cy"]
    assert any("Item 1 failed" in w and "left out" in w for w in parent(execution).warnings)


def test_on_item_error_fail_fails_the_step_and_cancels_items_not_yet_run(user, sent):
    people = {"people": [{"nom": "x"}] + [{"name": f"p{i}"} for i in range(5)]}
    execution = start(user, [map_step("input.people", transform("{{ item.name }}"), concurrency=1)], NAMED, people)
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "FAILED"
    assert execution.error["type"] == "ItemFailed" and execution.error["step"] == "each"
    assert execution.error["details"]["index"] == 0
    assert parent(execution).status == "FAILED"
    statuses = [r.status for r in items(execution)]
    assert statuses == ["FAILED"] + ["CANCELLED"] * 5  # none of the rest ever ran


def test_map_step_on_error_continue_goes_on_with_its_default_output(user, sent):
    step = map_step("input.people", transform("{{ item.name }}"))
    step.update(on_error="continue")
    step["config"]["default_output"] = "none"
    execution = start(user, [step, {"name": "after", "type": "TRANSFORM", "config": {"template": "got {{ steps.each.output }}"}}],
                      NAMED, PEOPLE)
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED"
    assert execution.output == "got none"


def test_items_that_are_not_a_list_or_too_many_fail_the_step_with_a_clear_error(user, sent):
    not_list = start(user, [map_step("input.words", transform("{{ item }}"))], WORDS, {"words": {"a": 1}})
    too_many = start(user, [map_step("input.words", transform("{{ item }}"), max_items=3)], WORDS,
                     {"words": [1, 2, 3, 4]})
    drive(sent)
    not_list.refresh_from_db()
    too_many.refresh_from_db()
    assert not_list.status == too_many.status == "FAILED"
    assert not_list.error["type"] == "MapItemsError" and "not a list" in not_list.error["message"]
    assert "4 items, more than max_items (3)" in too_many.error["message"]
    assert not items(not_list) and not items(too_many)


def test_an_empty_list_completes_at_once_with_no_items(user, sent):
    execution = start(user, [map_step("input.words", transform("{{ item }}"))], WORDS, {"words": []})
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED" and execution.output == []


def test_each_item_retries_by_the_inner_steps_retry_config(user, sent):
    inner = echo("{{ item }}", delay_ms=50)
    inner["config"]["model"]["delay_ms"] = 5000  # longer than the timeout: ProviderTimeout, transient
    inner["timeout_seconds"] = 0.01
    inner["retry_config"] = {"max_retries": 2, "backoff_base_seconds": 0, "jitter": False}
    execution = start(user, [map_step("input.words", inner, on_item_error="continue")], WORDS, {"words": ["a", "b"]})
    fan_out(sent)
    while item_messages(sent):
        for message in list(item_messages(sent)):
            sent.remove(message)
            orchestration.step_attempt_run(step_execution_id=message[1][0], attempt=int(message[1][1]))
    execution.refresh_from_db()
    assert execution.status == "COMPLETED"
    assert execution.output == [None, None]
    assert [(r.status, r.retry_count, r.attempt) for r in items(execution)] == [("FAILED", 2, 3)] * 2


def test_a_completed_item_is_never_run_again_and_a_late_attempt_is_fenced_off(user, sent):
    execution = start(user, [map_step("input.words", transform("{{ item }}"))], WORDS, {"words": ["a", "b"]})
    fan_out(sent)
    first, second = items(execution)
    assert orchestration.step_attempt_run(step_execution_id=first.id, attempt=1) == "checkpointed"
    # a redelivery of the same message after the item completed
    assert orchestration.step_attempt_run(step_execution_id=first.id, attempt=1) == "not-claimed"
    # the second item's worker is frozen past its lease: the reaper hands the item on
    claimed = transitions.step_claim(step_execution_id=second.id, attempt=1, worker="frozen")
    WorkflowStepExecution.objects.filter(pk=second.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert reaper_sweep().expired_leases == 1
    drive(sent)  # attempt 2 completes the step
    from workflows.engine.types import StepResult
    late = transitions.step_checkpoint(claimed=claimed, result=StepResult(status="COMPLETED", output="stale"),
                                       worker="frozen", claim_next=False)
    assert late.outcome == "rejected"
    execution.refresh_from_db()
    assert execution.status == "COMPLETED" and execution.output == ["a", "b"]
    assert items(execution)[1].attempt == 2 and items(execution)[1].lost_attempts == 1


def test_an_item_losing_its_worker_too_often_fails_as_worker_lost_under_on_item_error(user, sent, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "MAX_LOST_ATTEMPTS": 1}
    execution = start(user, [map_step("input.words", transform("{{ item }}"), on_item_error="continue")],
                      WORDS, {"words": ["a", "b"]})
    fan_out(sent)
    first, second = items(execution)
    transitions.step_claim(step_execution_id=first.id, attempt=1, worker="doomed")
    WorkflowStepExecution.objects.filter(pk=first.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert reaper_sweep().workers_lost == 1
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    assert execution.output == [None, "b"]
    assert items(execution)[0].error["type"] == "WorkerLost"


def test_two_items_finishing_at_once_move_the_run_on_exactly_once(user, sent):
    execution = start(user, [
        map_step("input.words", transform("{{ item }}")),
        {"name": "after", "type": "TRANSFORM", "config": {"template": "{{ steps.each.output | length }}"}},
    ], WORDS, {"words": ["a", "b"]})
    fan_out(sent)
    sent.clear()
    rows = items(execution)
    claims = [transitions.step_claim(step_execution_id=r.id, attempt=1, worker=f"w{r.item_index}") for r in rows]
    barrier = threading.Barrier(2)
    outcomes = []

    def finish(claimed) -> None:
        from workflows.engine.types import StepResult
        try:
            barrier.wait()
            outcomes.append(transitions.step_checkpoint(
                claimed=claimed, result=StepResult(status="COMPLETED", output=claimed.item.upper(),
                                                   input={"item": claimed.item}),
                worker="w", claim_next=False).outcome)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=finish, args=(c,)) for c in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == ["checkpointed", "checkpointed"]
    after_rows = WorkflowStepExecution.objects.filter(execution=execution, step_name="after")
    assert after_rows.count() == 1
    assert len([m for m in sent if m[0] == task_names.RUN_STEP]) == 1  # the next step, sent once
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED" and execution.output == "2"
    assert parent(execution).output == ["A", "B"]


def test_cancel_stops_the_pending_items(user, sent):
    execution = start(user, [map_step("input.words", transform("{{ item }}"), concurrency=2)],
                      WORDS, {"words": list("abcdef")})
    fan_out(sent)
    deliver_one(sent)  # one item done
    execution_cancel(execution=WorkflowExecution.objects.get(pk=execution.pk), user=user)
    drive(sent)  # what was already sent is a no-op now
    execution.refresh_from_db()
    assert execution.status == "CANCELLED"
    statuses = [r.status for r in items(execution)]
    assert statuses.count("COMPLETED") == 1
    assert statuses.count("CANCELLED") == 5
    assert parent(execution).status == "CANCELLED"


def test_a_multi_model_inner_prompt_runs_for_each_item(user, sent):
    from waffle import get_waffle_switch_model

    get_waffle_switch_model().objects.update_or_create(name="workflow.multiModel", defaults={"active": True})
    inner = {"type": "PROMPT", "config": {"template": "hi {{ item }}", "mode": "parallel", "models": [
        {"provider": "echo", "model": "one"}, {"provider": "echo", "model": "two"}]}}
    execution = start(user, [map_step("input.words", inner)], WORDS, {"words": ["x", "y"]})
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED", execution.error
    assert len(execution.output) == 2
    rows = items(execution)
    assert all(set(r.outputs) == {"echo:one", "echo:two"} for r in rows)
    assert all(len(r.model_outputs) == 2 for r in rows)


def test_steps_after_the_map_do_not_see_its_items_as_steps(user, sent):
    execution = start(user, [
        map_step("input.words", transform("{{ item }}")),
        {"name": "after", "type": "TRANSFORM", "config": {"template": "{{ steps | list | join(',') }}"}},
    ], WORDS, {"words": ["a", "b", "c"]})
    drive(sent)
    execution.refresh_from_db()
    assert execution.output == "each"


def test_an_item_whose_message_was_lost_is_sent_again_by_the_reaper_and_one_never_sent_is_not(user, sent, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "ENQUEUE_GRACE_SECONDS": 0}
    execution = start(user, [map_step("input.words", transform("{{ item }}"), concurrency=1)],
                      WORDS, {"words": ["a", "b"]})
    fan_out(sent)
    first, second = items(execution)
    sent.clear()  # the first item's message is lost
    WorkflowStepExecution.objects.filter(pk=first.pk).update(available_at=timezone.now() - timedelta(seconds=5))
    assert reaper_sweep().steps_resent == 1  # the second was never sent: its turn has not come
    assert [m[1][0] for m in item_messages(sent)] == [str(first.pk)]
    drive(sent)
    execution.refresh_from_db()
    assert execution.status == "COMPLETED" and execution.output == ["a", "b"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-statements", "orm"])
def test_both_checkpoint_paths_join_alike_and_the_fast_one_takes_every_item_but_the_last(user, sent, settings,
                                                                                       monkeypatch, fast):
    from workflows.services.transitions import _postgres

    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "FAST_STATEMENTS": fast}
    taken = []
    original = _postgres.checkpoint_item

    def spy(*args, **kwargs):
        done = original(*args, **kwargs)
        taken.append(done is not None)
        return done

    monkeypatch.setattr(_postgres, "checkpoint_item", spy)
    execution = start(user, [map_step("input.words", echo("{{ item }}"), concurrency=2),
                             {"name": "after", "type": "TRANSFORM", "config": {"template": "{{ steps.each.output }}"}}],
                      WORDS, {"words": ["a", "b", "c", "d", "e"]})
    fan_out(sent)
    in_flight = []
    while item_messages(sent):
        deliver_one(sent)
        in_flight.append(sum(1 for r in items(execution) if r.status == "RUNNING"
                             or (r.status == "PENDING" and r.available_at is not None)))
    execution.refresh_from_db()
    assert execution.status == "COMPLETED" and execution.output == "['a', 'b', 'c', 'd', 'e']"
    assert max(in_flight) <= 2
    assert execution.aggregate_tokens["total"] == sum(r.tokens["total"] for r in items(execution)) > 0
    assert taken == ([True, True, True, True, False] if fast else [])


def _cancelled_after(user, sent, words, done: int):
    """A run of a MAP over ``words`` (one item at a time) cancelled once ``done`` items completed."""
    execution = start(user, [map_step("input.words", echo("say {{ item }}"), concurrency=1)], WORDS, {"words": words})
    fan_out(sent)
    for _ in range(done):
        deliver_one(sent)
    execution_cancel(execution=WorkflowExecution.objects.get(pk=execution.pk))
    sent.clear()
    execution.refresh_from_db()
    assert execution.status == "CANCELLED"
    assert [r.status for r in items(execution)][:done] == ["COMPLETED"] * done
    return execution


def test_a_retry_of_a_map_keeps_the_items_that_completed_and_runs_only_the_others(user, sent):
    from workflows.services.executions import execution_retry

    original = _cancelled_after(user, sent, ["a", "b", "c", "d"], done=2)
    retry = execution_retry(execution=original, user=user)
    drive(sent)

    retry.refresh_from_db()
    assert retry.status == "COMPLETED", retry.error
    assert retry.output == ["say a", "say b", "say c", "say d"]
    rows = items(retry)
    kept = {r.item_index: r.reused_from_id for r in rows if r.reused_from_id}
    assert kept == {0: items(original)[0].pk, 1: items(original)[1].pk}  # no model call made again for them
    assert [r.attempt for r in rows[2:]] == [1, 1] and all(r.reused_from_id is None for r in rows[2:])
    # Only the two new items' calls count in the retry's totals.
    assert retry.aggregate_tokens["total"] == sum(r.tokens["total"] for r in rows[2:])


def test_a_retry_runs_again_an_item_whose_value_changed_and_completes_at_once_when_none_is_left(user, sent):
    from workflows.services.executions import execution_retry

    changed = _cancelled_after(user, sent, ["a", "b"], done=1)
    # As if the items expression now gave another value at index 0 (the copy must not be trusted).
    WorkflowStepExecution.objects.filter(execution=changed, item_index=0).update(input={"item": "zzz", "index": 0})
    retry = execution_retry(execution=changed, user=user)
    drive(sent)
    retry.refresh_from_db()
    assert retry.output == ["say a", "say b"]
    assert not any(r.reused_from_id for r in items(retry))

    # Every item completed but the run was cancelled before the join: the retry's MAP joins from the copies.
    whole = _cancelled_after(user, sent, ["x", "y"], done=1)
    WorkflowStepExecution.objects.filter(execution=whole, item_index=1).update(
        status="COMPLETED", output="say y", input={"item": "y", "index": 1})
    retry = execution_retry(execution=whole, user=user)
    drive(sent)
    retry.refresh_from_db()
    assert retry.status == "COMPLETED", retry.error
    assert retry.output == ["say x", "say y"]
    assert all(r.reused_from_id for r in items(retry))
    assert parent(retry).status == "COMPLETED"
