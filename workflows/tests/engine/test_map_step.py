"""MAP in the engine: its config validation (save time), its item templates' names, its
items expression, and in-process runs (previews) over the first items. No database."""
from __future__ import annotations

from typing import Any

from workflows.engine.references import definition_reference_problems
from workflows.engine.runner import IN_PROCESS_MAP_ITEMS, run_step, run_workflow, validate_definition
from workflows.engine.steps.map_step import map_result

from .helpers import ECHO, make_context, make_definition, make_step

WORDS = [{"name": "words", "type": "JSON", "required": True}]


def map_dict(inner: Any = None, name: str = "each", order: int = 0, **config: Any) -> dict[str, Any]:
    inner = inner if inner is not None else {"type": "TRANSFORM", "config": {"template": "{{ item }}"}}
    return {"name": name, "order": order, "type": "MAP", "config": {"items": "input.words", "step": inner, **config}}


def no_providers(name: str):
    raise AssertionError(f"no provider expected, asked for {name}")


def test_a_good_map_step_has_no_errors() -> None:
    inner = {"type": "PROMPT", "config": {"template": "Sum up {{ item }} ({{ index }})", "model": ECHO},
             "retry_config": {"max_retries": 2}}
    assert validate_definition([map_dict(inner, concurrency=5, on_item_error="drop", max_items=50)], WORDS) == {}


def test_map_config_errors_name_the_field_to_fix() -> None:
    step = map_dict({"type": "CONDITION", "config": {"expression": "true"}}, concurrency=0, on_item_error="skip")
    step["config"]["items"] = ""
    errors = validate_definition([step], WORDS)
    assert "steps[0].config.items" in errors
    assert errors["steps[0].config.concurrency"] == ["must be a whole number from 1 to 1000."]
    assert "must be \"fail\" (default)" in errors["steps[0].config.on_item_error"][0]
    assert "must be one of PROMPT, TRANSFORM, HTTP" in errors["steps[0].config.step.type"][0]


def test_the_inner_steps_own_config_and_retry_config_are_checked_under_config_step() -> None:
    errors = validate_definition([map_dict({"type": "TRANSFORM", "config": {}, "retry_config": {"max_retries": -1},
                                            "name": "x"})], WORDS)
    assert "steps[0].config.step.config.template" in errors
    assert "steps[0].config.step.retry_config" in errors
    assert "no name, order or on_error" in errors["steps[0].config.step"][0]
    assert "steps[0].config.step" in validate_definition([map_dict("not a step")], WORDS)


def test_a_multi_model_inner_prompt_needs_the_switch_like_any_prompt() -> None:
    inner = {"type": "PROMPT", "config": {"template": "{{ item }}", "models": [ECHO, ECHO], "mode": "parallel"}}
    assert "steps[0].config.step.config.models" in validate_definition([map_dict(inner)], WORDS)
    assert validate_definition([map_dict(inner)], WORDS, features={"workflow.multiModel"}) == {}


def test_inner_templates_see_item_and_index_but_other_templates_do_not() -> None:
    inner = {"type": "TRANSFORM", "config": {"template": "{{ index }} {{ item.name }} {{ input.words | length }}"}}
    assert definition_reference_problems([map_dict(inner)], WORDS) == ([], [])
    outside = {"name": "later", "order": 1, "type": "TRANSFORM", "config": {"template": "{{ item }}"}}
    errors, _ = definition_reference_problems([map_dict(inner), outside], WORDS)
    assert [e.path for e in errors] == ["steps[1].config.template"]
    typo, _ = definition_reference_problems([map_dict({"type": "TRANSFORM", "config": {"template": "{{ itme }}"}})],
                                            WORDS)
    assert typo[0].path == "steps[0].config.step.config.template"
    assert "inner templates see item, index" in typo[0].message
    bad_items, _ = definition_reference_problems([{**map_dict(), "config": {**map_dict()["config"],
                                                                            "items": "input.nope"}}], WORDS)
    assert bad_items[0].path == "steps[0].config.items"


def test_items_that_are_not_a_list_fail_the_step_with_the_type_it_got() -> None:
    step = make_step("each", 0, "MAP", config={"items": "input.words", "step": {"type": "TRANSFORM",
                                                                                  "config": {"template": "x"}}})
    result = run_step(step, make_context({"words": "abc"}), providers=no_providers)
    assert result.status == "FAILED"
    assert result.error["type"] == "MapItemsError"
    assert result.error["message"] == "config.items (input.words) gave str, not a list."


def test_a_map_step_run_in_process_gives_its_outputs_in_item_order() -> None:
    definition = make_definition(map_dict({"type": "TRANSFORM", "config": {"template": "{{ index }}={{ item }}"}}),
                                 variables=WORDS)
    run = run_workflow(definition, {"words": ["a", "b", "c"]}, providers=no_providers)
    assert run.status == "COMPLETED"
    assert run.output == ["0=a", "1=b", "2=c"]


def test_in_process_runs_run_the_first_items_only_and_say_so() -> None:
    definition = make_definition(map_dict(), variables=WORDS)
    words = list(range(IN_PROCESS_MAP_ITEMS + 5))
    run = run_workflow(definition, {"words": words}, providers=no_providers)
    assert run.output == [str(w) for w in words[:IN_PROCESS_MAP_ITEMS]]
    assert any(f"Only the first {IN_PROCESS_MAP_ITEMS} of {len(words)} items" in w for w in run.warnings)


def test_the_join_orders_outputs_sums_tokens_and_applies_on_item_error() -> None:
    entries = [(2, "COMPLETED", "c", None, {"input": 1, "output": 1, "total": 2}),
               (0, "COMPLETED", "a", None, {"input": 2, "output": 2, "total": 4}),
               (1, "FAILED", None, {"type": "Boom", "message": "no"}, {})]
    for mode, output in (("continue", ["a", None, "c"]), ("drop", ["a", "c"])):
        step = make_step("each", 0, "MAP", config={"on_item_error": mode})
        result = map_result(step, entries, input={})
        assert (result.status, result.output, result.tokens["total"]) == ("COMPLETED", output, 6)
        assert result.warnings and "Item 1 failed with Boom: no" in result.warnings[0]
    failed = map_result(make_step("each", 0, "MAP", config={}), entries, input={})
    assert failed.status == "FAILED" and failed.error["details"]["index"] == 1
