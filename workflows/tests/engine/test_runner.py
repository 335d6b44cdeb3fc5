"""workflows/engine/runner.py: transitions between steps and whole in-process runs."""
from __future__ import annotations

from typing import Any

from providers.registry import get_adapter
from workflows.engine.runner import context_entry, first_step, next_transition, run_workflow
from workflows.engine.types import COMPLETED, FAILED, NextAction, StepResult, WorkflowDefinition

from .helpers import ECHO, make_definition


def step(name: str, order: int, step_type: str = "TRANSFORM", **fields: Any) -> dict[str, Any]:
    fields.setdefault("config", {"template": name})
    return {"name": name, "order": order, "type": step_type, **fields}


FIVE = make_definition(*(step(name, order) for order, name in enumerate("abcde")))


def names(steps: list) -> list[str]:
    return [s.name for s in steps]


def completed(next_action: str = "continue") -> StepResult:
    return StepResult(status=COMPLETED, next=NextAction.parse(next_action))


def failed_result() -> StepResult:
    return StepResult(status=FAILED, error={"type": "TemplateError", "message": "x", "step": "b", "details": {}})


def with_on_error(definition: WorkflowDefinition, name: str, on_error: str) -> WorkflowDefinition:
    data = {"steps": [step(s.name, s.order, on_error=on_error if s.name == name else "fail") for s in definition.steps]}
    return WorkflowDefinition.from_dict(data)


def test_first_step_is_the_lowest_order() -> None:
    definition = make_definition(step("late", 7), step("early", 2))
    assert first_step(definition).name == "early"
    assert first_step(make_definition()) is None


def test_continue_goes_to_the_next_step_by_order() -> None:
    transition = next_transition(FIVE, FIVE.step("b"), completed())
    assert (transition.next_step.name, transition.skipped, transition.fail_run) == ("c", [], False)


def test_the_last_step_ends_the_run() -> None:
    assert next_transition(FIVE, FIVE.step("e"), completed()).next_step is None


def test_stop_ends_the_run_and_skips_every_remaining_step() -> None:
    transition = next_transition(FIVE, FIVE.step("b"), completed("stop"))
    assert transition.next_step is None and names(transition.skipped) == ["c", "d", "e"]


def test_skip_to_jumps_forward_and_skips_the_steps_between() -> None:
    transition = next_transition(FIVE, FIVE.step("a"), completed("skip_to:d"))
    assert transition.next_step.name == "d" and names(transition.skipped) == ["b", "c"]


def test_skip_to_a_missing_or_earlier_step_fails_the_run() -> None:
    assert next_transition(FIVE, FIVE.step("c"), completed("skip_to:a")).fail_run
    assert next_transition(FIVE, FIVE.step("c"), completed("skip_to:zz")).fail_run


def test_failed_step_with_on_error_fail_fails_the_run() -> None:
    transition = next_transition(FIVE, FIVE.step("b"), failed_result())
    assert (transition.next_step, transition.skipped, transition.fail_run) == (None, [], True)


def test_failed_step_with_on_error_continue_goes_on() -> None:
    definition = with_on_error(FIVE, "b", "continue")
    transition = next_transition(definition, definition.step("b"), failed_result())
    assert transition.next_step.name == "c" and not transition.fail_run


def test_failed_step_with_skip_to_takes_the_fail_branch() -> None:
    definition = with_on_error(FIVE, "b", "skip_to:e")
    transition = next_transition(definition, definition.step("b"), failed_result())
    assert transition.next_step.name == "e" and names(transition.skipped) == ["c", "d"]


def test_context_entry_is_what_later_templates_see() -> None:
    result = StepResult(status=COMPLETED, output="x", outputs={"echo:echo": "x"})
    assert context_entry(FIVE.step("a"), result) == {"output": "x", "outputs": {"echo:echo": "x"}, "status": COMPLETED}


# -------------------------------------------------------------- run_workflow

PIPELINE = make_definition(
    step("draft", 1, "PROMPT", config={"template": "Tell me about {{ input.topic }}", "model": ECHO}),
    step("check", 2, "CONDITION", config={"expression": "'owls' in steps.draft.output", "if_true": "skip_to:final"}),
    step("rewrite", 3, "PROMPT", config={"template": "Rewrite {{ steps.draft.output }}", "model": ECHO}),
    step("final", 4, "TRANSFORM", config={"template": '{"text": {{ steps.draft.output|tojson }}, "via": {{ trigger.type|tojson }}}', "output_format": "json"}),
    variables=[{"name": "topic", "type": "STRING", "required": True}],
)


def test_run_workflow_chains_outputs_and_records_skipped_steps() -> None:
    run = run_workflow(PIPELINE, {"topic": "owls"}, providers=get_adapter)
    assert run.status == COMPLETED and run.error is None
    assert run.output == {"text": "Tell me about owls", "via": "MANUAL"}
    assert [(s.name, r.status if r else "SKIPPED") for s, r, _ in run.steps] == [
        ("draft", COMPLETED), ("check", COMPLETED), ("rewrite", "SKIPPED"), ("final", COMPLETED)
    ]
    assert run.tokens == {"input": 4, "output": 4, "total": 8}  # only the draft called a model


def test_run_workflow_stop_ends_with_the_condition_output() -> None:
    run = run_workflow(PIPELINE, {"topic": "cats"}, providers=get_adapter, trigger={"type": "API", "payload": {}})
    assert run.status == COMPLETED and run.output is False
    assert [r.status if r else "SKIPPED" for _, r, _ in run.steps] == [COMPLETED, COMPLETED, "SKIPPED", "SKIPPED"]


def test_run_workflow_sees_the_trigger() -> None:
    definition = make_definition(step("t", 1, config={"template": "{{ trigger.type }}:{{ trigger.payload.id }}"}))
    run = run_workflow(definition, {}, providers=get_adapter, trigger={"type": "WEBHOOK", "payload": {"id": 7}})
    assert run.output == "WEBHOOK:7"


def test_a_failing_step_fails_the_run_and_later_steps_do_not_run() -> None:
    definition = make_definition(step("a", 1, config={"template": "{{ nope }}"}), step("b", 2))
    run = run_workflow(definition, {}, providers=get_adapter)
    assert run.status == FAILED
    assert run.error["type"] == "TemplateError" and run.error["step"] == "a"
    assert names([s for s, _, _ in run.steps]) == ["a"]


def test_on_error_continue_feeds_the_default_output_to_later_steps() -> None:
    definition = make_definition(
        step("a", 1, config={"template": "{{ nope }}", "default_output": "n/a"}, on_error="continue"),
        step("b", 2, config={"template": "got {{ steps.a.output }} ({{ steps.a.status }})"}),
    )
    run = run_workflow(definition, {}, providers=get_adapter)
    assert run.status == COMPLETED and run.output == "got n/a (FAILED)"


def test_invalid_inputs_fail_the_run_before_any_step() -> None:
    run = run_workflow(PIPELINE, {"topik": "owls"}, providers=get_adapter)
    assert run.status == FAILED and run.steps == []
    assert run.error["type"] == "InputValidationError"
    assert set(run.error["details"]["errors"]) == {"topic", "topik"}


def test_provider_warnings_are_collected_with_the_step_name() -> None:
    from .helpers import ScriptedAdapter

    adapter = ScriptedAdapter("x", warnings=["truncated"])
    definition = make_definition(step("ask", 1, "PROMPT", config={"template": "q", "model": ECHO}))
    assert run_workflow(definition, {}, providers=adapter.resolver).warnings == ["ask: truncated"]
