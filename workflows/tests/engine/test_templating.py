"""workflows/engine/templating.py: the sandbox and the limits that protect workers."""
from __future__ import annotations

import time

import pytest

from workflows.engine.errors import TemplateError
from workflows.engine.templating import (
    evaluate_expression,
    render,
    template_limits,
    validate_expression,
    validate_template,
)

CONTEXT = {
    "input": {"name": "Ann", "items": [1, 2, 3], "doc": {"title": "Report"}},
    "steps": {"draft": {"output": "hello", "outputs": None, "status": "COMPLETED"}},
    "trigger": {"type": "WEBHOOK", "payload": {"event": "push"}},
}


def render_error(source: str, **limits: int) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render(source, CONTEXT, **limits)
    return caught.value


def test_templates_see_inputs_earlier_step_outputs_and_the_trigger() -> None:
    text = render("{{ input.name }}/{{ steps.draft.output }}/{{ trigger.type }}/{{ trigger.payload.event }}", CONTEXT)
    assert text == "Ann/hello/WEBHOOK/push"


def test_a_variable_named_like_a_dict_method_reads_the_variable() -> None:
    # ``input.items`` is the builder's variable, not ``dict.items``.
    assert render("{% for i in input.items %}{{ i }}{% endfor %}", CONTEXT) == "123"


def test_undefined_name_fails_naming_it_and_its_line() -> None:
    error = render_error("Hello\n{{ customer }}")
    assert "'customer' is undefined" in error.message
    assert error.message.startswith("Line 2:")
    assert error.details == {"reason": "undefined", "line": 2}
    assert error.type == "TemplateError"


def test_misspelt_input_variable_fails_instead_of_rendering_empty() -> None:
    error = render_error("{{ input.nmae }}")
    assert "nmae" in error.message


@pytest.mark.parametrize("source", ["{{ ''.__class__ }}", "{{ input.__class__.__mro__ }}", "{{ range.__globals__ }}"])
def test_sandbox_violations_fail_the_render(source: str) -> None:
    error = render_error(source)
    assert error.details["reason"] == "sandbox"
    assert "unsafe" in error.message


def test_calling_mro_is_refused() -> None:
    assert render_error("{{ [].__class__.mro() }}").details["reason"] == "sandbox"


def test_templates_cannot_change_inputs_that_later_steps_read() -> None:
    context = {"input": {"tags": ["a"]}}
    with pytest.raises(TemplateError):
        render("{{ input.tags.append('b') }}", context)
    assert context["input"]["tags"] == ["a"]


@pytest.mark.parametrize("tag", ["{% include 'x' %}", "{% import 'x' as m %}", "{% from 'x' import m %}", "{% extends 'x' %}"])
def test_templates_cannot_load_other_templates(tag: str) -> None:
    message = validate_template(tag)
    assert message is not None and "cannot load other templates" in message
    assert render_error(tag).details["reason"] == "syntax"


def test_string_repetition_bomb_is_refused_before_allocating() -> None:
    started = time.monotonic()
    error = render_error("{{ 'x' * 10**9 }}")
    assert error.details["reason"] == "limit"
    assert time.monotonic() - started < 1


def test_huge_power_is_refused() -> None:
    assert render_error("{{ 2 ** 100000000 }}").details["reason"] == "limit"
    assert render("{{ 2 ** 10 }}", CONTEXT) == "1024"


def test_nested_loops_over_budget_fail_fast_instead_of_hanging() -> None:
    started = time.monotonic()
    error = render_error("{% for a in range(5000) %}{% for b in range(5000) %}{% endfor %}{% endfor %}")
    assert "loop iterations" in error.message
    assert time.monotonic() - started < 2


def test_the_loop_budget_is_shared_by_every_loop_of_a_render() -> None:
    source = "{% for a in range(6) %}{% endfor %}{% for b in range(6) %}{% endfor %}ok"
    assert render(source, CONTEXT, max_loop_iterations=12) == "ok"
    assert render_error(source, max_loop_iterations=11).details["reason"] == "limit"


def test_each_render_gets_a_fresh_budget() -> None:
    source = "{% for a in range(8) %}{% endfor %}ok"
    for _ in range(3):
        assert render(source, CONTEXT, max_loop_iterations=10) == "ok"


def test_range_is_capped_to_the_loop_budget() -> None:
    assert "range()" in render_error("{{ range(100000)|length }}").message


def test_recursive_macro_fails_with_a_template_error() -> None:
    error = render_error("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}")
    assert error.details["reason"] == "limit"


def test_macro_fan_out_cannot_run_exponentially_long() -> None:
    started = time.monotonic()
    render_error("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}")
    assert time.monotonic() - started < 2


def test_recursive_for_loops_count_their_children() -> None:
    source = "{% for x in [[1, [2, [3]]]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}{% endfor %}"
    assert render(source, CONTEXT) == "123"
    assert render_error(source, max_loop_iterations=3).details["reason"] == "limit"


def test_output_over_the_limit_stops_the_render() -> None:
    error = render_error("{% for i in range(100) %}0123456789{% endfor %}", max_output_chars=500)
    assert "longer than 500 characters" in error.message


def test_doubling_a_string_in_a_loop_is_refused() -> None:
    source = "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"
    assert render_error(source).details["reason"] == "limit"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '%1000000000s' % 'x' }}",
        "{{ '{:>1000000000}'.format('x') }}",
        "{{ 'a\tb'.expandtabs(1000000000) }}",
        "{{ ('ab' * 100000)|replace('', 'xyzxyz') }}",
        "{{ range(3)|batch(1000000000, 'x')|list }}",
    ],
)
def test_padding_and_replacement_amplifiers_are_refused(source: str) -> None:
    assert render_error(source).details["reason"] == "limit"


def test_printing_a_list_of_one_big_string_repeated_is_refused() -> None:
    # The list itself is small (10,000 references); its text would be 1 GB.
    assert render_error("{% set l = ['a' * 100000] * 10000 %}{{ l }}").details["reason"] == "limit"
    assert render_error("{% set l = ['a' * 100000] * 10000 %}{{ l|join }}").details["reason"] == "limit"


def test_text_captured_in_a_block_counts_against_the_render() -> None:
    source = "{% set x %}{% for i in range(9000) %}" + "z" * 50_000 + "{% endfor %}{% endset %}{{ x|length }}"
    assert render_error(source).details["reason"] == "limit"


def test_ordinary_templates_still_work_under_the_guards() -> None:
    source = (
        "{{ input['items']|map('string')|join(', ') }}|{{ input.name|upper }}|{{ '%s!' % input.name }}|"
        "{{ '{:>4}'.format(1) }}|{{ [1, 2]|tojson }}|{{ input.doc.title ~ ' v' ~ 2 }}|{{ 'ab' * 2 }}"
    )
    assert render(source, CONTEXT) == "1, 2, 3|ANN|Ann!|   1|[1, 2]|Report v2|abab"


def test_runtime_errors_become_template_errors_with_their_line() -> None:
    error = render_error("a\n\n{{ 1 / 0 }}")
    assert error.message == "Line 3: ZeroDivisionError: division by zero"


def test_evaluate_expression_returns_python_values() -> None:
    assert evaluate_expression("input['items']|length > 2", CONTEXT) is True
    assert evaluate_expression("input['items']|select('odd')", CONTEXT) == [1, 3]
    assert evaluate_expression("steps.draft.status == 'COMPLETED' and trigger.type == 'WEBHOOK'", CONTEXT) is True


def test_expression_with_an_undefined_name_fails_naming_it() -> None:
    with pytest.raises(TemplateError, match="'score' is undefined"):
        evaluate_expression("score", CONTEXT)


def test_expressions_have_the_same_limits_as_templates() -> None:
    with pytest.raises(TemplateError, match="power that large"):
        evaluate_expression("2 ** 100000000", CONTEXT)


def test_empty_expression_is_refused() -> None:
    assert validate_expression("  ") == "The expression is empty."


def test_validate_template_reports_the_line_of_a_syntax_error() -> None:
    assert validate_template("ok {{ input.name }}") is None
    message = validate_template("line one\nline two\nHi {{ input.name }")
    assert message is not None and message.startswith("Line 3:")


def test_validate_template_catches_unknown_filters() -> None:
    assert "No filter named 'shout'" in (validate_template("{{ input.name|shout }}") or "")


def test_validate_expression_rejects_trailing_text() -> None:
    assert validate_expression("input.a == 1") is None
    assert validate_expression("input.a = 1") is not None


def test_template_limits_read_settings_or_keyword_names() -> None:
    assert template_limits({"TEMPLATE_MAX_OUTPUT_CHARS": 10, "TEMPLATE_MAX_LOOP_ITERATIONS": 5,
                            "TEMPLATE_MAX_SECONDS": 2}) == {
        "max_output_chars": 10,
        "max_loop_iterations": 5,
        "max_seconds": 2.0,
        "deadline": None,
        "deadline_seconds": None,
    }
    assert template_limits({"max_output_chars": 7})["max_output_chars"] == 7
    assert template_limits({"deadline": 123.5, "deadline_seconds": 5})["deadline"] == 123.5
    assert template_limits({"deadline": 123.5, "deadline_seconds": 5})["deadline_seconds"] == 5
    assert template_limits(None) == {"max_output_chars": 200_000, "max_loop_iterations": 10_000,
                                     "max_seconds": None, "deadline": None, "deadline_seconds": None}
