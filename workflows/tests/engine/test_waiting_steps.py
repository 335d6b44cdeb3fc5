"""APPROVAL and DELAY in the engine: what they park with, how a decision or a timer ends
them (``runner.resume_step``), their save-time checks, and previews answering them."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from workflows.engine.errors import InputValidationError
from workflows.engine.runner import resume_step, run_step, run_workflow, validate_definition
from workflows.engine.steps.approval import form_data
from workflows.engine.types import COMPLETED, FAILED, WAITING

from .helpers import make_context, make_definition, make_step


def _run(step, context=None):
    return run_step(step, context or make_context(), providers=lambda name: None)


def test_a_delay_of_seconds_waits_until_now_plus_seconds():
    before = datetime.now(UTC)
    result = _run(make_step("pause", 0, "DELAY", config={"seconds": 90}))
    assert result.status == WAITING
    assert before + timedelta(seconds=90) <= result.wait_until <= datetime.now(UTC) + timedelta(seconds=90)
    assert result.output == {"until": result.wait_until.isoformat()}


def test_a_delay_until_renders_its_template_and_reads_a_zone_less_time_as_utc():
    step = make_step("pause", 0, "DELAY", config={"until": "{{ input.at }}"})
    result = _run(step, make_context({"at": "2999-01-02T03:04:05"}))
    assert result.status == WAITING
    assert result.wait_until == datetime(2999, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_delay_until_the_past_completes_at_once():
    result = _run(make_step("pause", 0, "DELAY", config={"until": "2001-01-01T00:00:00+02:00"}))
    assert result.status == COMPLETED and result.output == {"until": "2000-12-31T22:00:00+00:00"}


def test_an_approval_parks_with_its_rendered_message_and_form():
    form = [{"name": "reason", "type": "STRING", "required": True}]
    step = make_step("ok", 0, "APPROVAL", config={"message": "Publish {{ input.title }}?", "form": form,
                                                   "timeout_seconds": 60})
    result = _run(step, make_context({"title": "Otters"}))
    assert result.status == WAITING
    assert result.output["message"] == "Publish Otters?" and result.output["form"] == form
    assert result.output["expires_at"] == result.wait_until.isoformat()


def test_an_approval_without_timeout_waits_with_no_end():
    result = _run(make_step("ok", 0, "APPROVAL", config={"message": "Go?"}))
    assert result.status == WAITING and result.wait_until is None and result.output["expires_at"] is None


def test_an_approval_message_with_an_undefined_name_fails_the_step():
    result = _run(make_step("ok", 0, "APPROVAL", config={"message": "{{ input.nope }}"}))
    assert result.status == FAILED and result.error["type"] == "TemplateError"


def test_a_decision_becomes_the_output():
    step = make_step("ok", 0, "APPROVAL", config={"message": "Go?"})
    waited = _run(step)
    decision = {"approved": False, "decided_by": "ann", "comment": "no", "data": {}, "decided_at": "t"}
    result = resume_step(step, waited, decision)
    assert result.status == COMPLETED
    assert result.output == {"approved": False, "decided_by": "ann", "comment": "no", "data": {}, "decided_at": "t"}
    assert result.input == waited.input


@pytest.mark.parametrize(("on_timeout", "status", "approved"), [
    (None, COMPLETED, False), ("reject", COMPLETED, False), ("approve", COMPLETED, True), ("fail", FAILED, None)])
def test_on_timeout_decides_when_nobody_did(on_timeout, status, approved):
    config = {"message": "Go?", "timeout_seconds": 5, **({"on_timeout": on_timeout} if on_timeout else {})}
    step = make_step("ok", 0, "APPROVAL", config=config)
    result = resume_step(step, _run(step), {"timer": True})
    assert result.status == status
    if status == COMPLETED:
        assert result.output["approved"] is approved and result.output["decided_by"] is None
        assert result.warnings
    else:
        assert result.error["type"] == "ApprovalTimeout"


def test_form_data_is_validated_like_variables():
    step = make_step("ok", 0, "APPROVAL", config={"message": "Go?", "form": [
        {"name": "reason", "type": "STRING", "required": True}, {"name": "score", "type": "NUMBER", "required": False}]})
    assert form_data(step, {"reason": "fine"}) == {"reason": "fine", "score": None}
    with pytest.raises(InputValidationError) as caught:
        form_data(step, {"score": "high", "extra": 1})
    assert set(caught.value.errors) == {"reason", "score", "extra"}


def test_save_time_checks_name_what_to_fix():
    errors = validate_definition([
        {"name": "a", "order": 0, "type": "DELAY", "config": {}},
        {"name": "b", "order": 1, "type": "DELAY", "config": {"seconds": -1}},
        {"name": "c", "order": 2, "type": "APPROVAL",
         "config": {"form": [{"name": "1x", "type": "DATE"}], "on_timeout": "maybe", "timeout_seconds": 0}},
        {"name": "d", "order": 3, "type": "DELAY", "config": {"until": "{{ nope("}},
    ], [])
    assert "exactly one of config.seconds" in errors["steps[0].config"][0]
    assert "steps[1].config.seconds" in errors
    assert set(errors) >= {"steps[2].config.message", "steps[2].config.on_timeout", "steps[2].config.timeout_seconds",
                           "steps[2].config.form[0].name", "steps[2].config.form[0].type", "steps[3].config.until"}


def test_previews_answer_approvals_from_the_map_and_skip_delays_with_warnings():
    definition = make_definition(
        {"name": "pause", "order": 0, "type": "DELAY", "config": {"seconds": 3600}},
        {"name": "ok", "order": 1, "type": "APPROVAL", "config": {"message": "Go?"}},
        {"name": "also", "order": 2, "type": "APPROVAL", "config": {"message": "Sure?"}},
        {"name": "out", "order": 3, "type": "TRANSFORM",
         "config": {"template": "{{ steps.ok.output.approved }} {{ steps.also.output.approved }}"}},
    )
    run = run_workflow(definition, {}, providers=lambda name: None, approvals={"ok": False})
    assert run.status == COMPLETED and run.output == "False True"
    assert any(w.startswith("pause: the delay was skipped") for w in run.warnings)
    assert any(w.startswith("also: approved by default") for w in run.warnings)
    assert not any(w.startswith("ok:") for w in run.warnings)


def test_save_time_reference_checks_read_approval_messages_and_delay_times():
    from workflows.engine.references import definition_reference_problems

    errors, _ = definition_reference_problems([
        {"name": "ok", "order": 0, "type": "APPROVAL", "config": {"message": "{{ input.titel }}"}},
        {"name": "pause", "order": 1, "type": "DELAY", "config": {"until": "{{ steps.later.output }}"}},
        {"name": "later", "order": 2, "type": "TRANSFORM", "config": {"template": "x"}},
    ], [{"name": "title", "type": "STRING"}])
    assert [(e.path, e.step) for e in errors] == [("steps[0].config.message", "ok"), ("steps[1].config.until", "pause")]


def test_a_workflow_step_renders_typed_child_input_and_asks_for_the_child():
    from workflows.engine.steps.subworkflow import WorkflowStep  # noqa: F401  (registered)

    step = make_step("call", 0, "WORKFLOW", config={"workflow": 7, "input": {
        "n": "{{ input.count + 1 }}", "label": "run {{ input.count }}"}})
    result = _run(step, make_context({"count": 4}))
    assert result.status == WAITING and result.wait_until is None
    assert result.child == {"workflow": 7, "input": {"n": 5, "label": "run 4"}}
    done = resume_step(step, result, {"child": {"execution": "e1", "status": "COMPLETED", "output": {"x": 1}}})
    assert done.status == COMPLETED and done.output == {"x": 1}
    failed = resume_step(step, result, {"child": {"execution": "e1", "status": "FAILED",
                                                  "error": {"type": "Timeout", "message": "slow"}}})
    assert failed.status == FAILED and failed.error["type"] == "ChildFailed" and "slow" in failed.error["message"]


def test_workflow_step_config_is_checked():
    errors = validate_definition([
        {"name": "a", "order": 0, "type": "WORKFLOW", "config": {"workflow": "seven", "input": [], "wait": 1}},
    ], [])
    assert set(errors) >= {"steps[0].config.workflow", "steps[0].config.input", "steps[0].config.wait"}
