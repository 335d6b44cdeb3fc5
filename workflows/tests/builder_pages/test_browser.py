"""The builder's pages in a real browser: Debian's chromium driven by playwright against
pytest-django's live server (fixtures in workflows/tests/support/browser.py). A missing
chromium FAILS these tests (it never skips them).

Log in, create a workflow with two steps from /workflows/new, save, preview it with
sample data and see the step cards, type invalid JSON and see the guard.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from workflows.models import Workflow, WorkflowExecution

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_two_steps_save_preview_with_sample_data_and_guard_invalid_json(tab):
    expect(tab.locator("[data-testid=empty]")).to_contain_text("No workflows yet")
    tab.click("text=Create your first workflow")
    tab.wait_for_url(re.compile(r"/workflows/new$"))

    tab.fill("#id_name", "Ticket triage")
    tab.fill("#id_variables-0-name", "ticket")
    tab.fill("#id_variables-0-sample", "Printer on fire")
    # The first step: a PROMPT on echo; its template box lists the variable to insert.
    tab.fill("#id_steps-0-name", "draft")
    refs = tab.locator('[data-step]').first.locator('[data-refs="variables"]')
    expect(refs).to_contain_text("input.ticket")
    tab.fill("#id_steps-0-template", "Summarise ")
    refs.locator("button", has_text="input.ticket").click()
    expect(tab.locator("#id_steps-0-template")).to_have_value("Summarise {{ input.ticket }}")

    # Add a second step with the keyboard: a TRANSFORM reading the first.
    add = tab.locator('[data-formset="steps"] [data-add]')
    add.focus()
    tab.keyboard.press("Enter")
    second = tab.locator("[data-step]").nth(1)
    expect(second.locator("[data-position]")).to_have_text("2")
    expect(tab.locator("#id_steps-1-name")).to_be_focused()
    tab.keyboard.type("final")
    tab.select_option("#id_steps-1-type", "TRANSFORM")
    expect(second.locator("#id_steps-1-provider")).to_be_hidden()  # no model for a TRANSFORM
    expect(second.locator('[data-refs="steps"]')).to_contain_text("steps.draft.output")
    second.locator('[data-refs="steps"] button').click()
    expect(tab.locator("#id_steps-1-template")).to_have_value("{{ steps.draft.output }}")
    tab.click("button:has-text('Create workflow')")

    tab.wait_for_url(re.compile(r"/workflows/\d+/$"))
    workflow = Workflow.objects.get(name="Ticket triage")
    expect(tab.locator(".messages")).to_contain_text("created (version 1)")
    expect(tab.locator("[data-testid=pipeline] li")).to_have_count(2)
    expect(tab.locator("[data-testid=pipeline]")).to_contain_text("echo:echo")

    tab.click(".page-head >> text=Preview")
    tab.wait_for_url(re.compile(rf"/workflows/{workflow.pk}/preview$"))
    assert tab.evaluate("typeof window.htmx") == "object", "the vendored htmx loaded"
    expect(tab.locator("#id_use_sample_data")).to_be_checked()
    tab.click("button:has-text('Run preview')")
    cards = tab.locator("[data-testid=step-card]")
    expect(cards).to_have_count(2)
    expect(cards.nth(0)).to_contain_text("COMPLETED")
    expect(cards.nth(1)).to_contain_text("Summarise Printer on fire")
    assert tab.url.endswith(f"/workflows/{workflow.pk}/preview"), "the preview ran without leaving the page"
    cards.nth(0).locator("summary").click()
    expect(cards.nth(0).locator("details")).to_contain_text("Input")
    assert not WorkflowExecution.objects.exists(), "a preview persists nothing"

    # Raw JSON mode: the fields become JSON; invalid JSON disables Run and says where.
    tab.check("input[name=mode][value=json]")
    box = tab.locator("#id_input_json")
    expect(box).to_be_visible()
    box.fill('{\n  "ticket": "Fax jam",\n}')
    run = tab.locator("button:has-text('Run preview')")
    expect(run).to_be_disabled()
    expect(tab.locator("[data-json-status]")).to_contain_text("line 3, column 1")
    box.fill('{"ticket": "Fax jam"}')
    expect(run).to_be_enabled()
    expect(tab.locator("[data-json-status]")).to_have_text("Valid JSON.")
    run.click()
    expect(tab.locator("[data-testid=step-card]").nth(1)).to_contain_text("Summarise Fax jam")


def test_preview_answers_an_approval_with_the_reject_choice(tab, builder):
    from workflows.tests.factories import make_workflow

    workflow = make_workflow(builder, name="Refund", steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Refund order 42?"}},
        {"name": "gate", "type": "CONDITION", "config": {"expression": "steps.review.output.approved",
                                                         "if_false": "skip_to:decline"}},
        {"name": "pay", "type": "TRANSFORM", "config": {"template": "refund paid"}},
        {"name": "decline", "type": "TRANSFORM", "config": {"template": "declined"}},
    ])
    tab.goto(f"/workflows/{workflow.pk}/preview")
    choice = tab.locator("[data-approval-step=review]")
    expect(choice.locator("input[value=approve]")).to_be_checked()
    choice.locator("label", has_text="Reject").click()
    tab.click("button:has-text('Run preview')")
    pay = tab.locator("[data-testid=step-card][data-step-name=pay]")
    expect(pay).to_contain_text("SKIPPED")
    expect(tab.locator("[data-testid=step-card][data-step-name=decline]")).to_contain_text("COMPLETED")
    assert not WorkflowExecution.objects.exists(), "a preview persists nothing"


def test_remove_and_reorder_steps_with_the_buttons(tab, builder):
    from workflows.tests.factories import make_workflow

    workflow = make_workflow(builder, name="Three", steps=[
        {"name": "a", "type": "TRANSFORM", "config": {"template": "A"}},
        {"name": "b", "type": "TRANSFORM", "config": {"template": "B"}},
        {"name": "c", "type": "TRANSFORM", "config": {"template": "C"}},
    ])
    tab.goto(f"/workflows/{workflow.pk}/edit")
    steps = tab.locator("[data-step]:visible")
    expect(steps).to_have_count(3)
    steps.nth(2).locator("[data-move=up]").click()  # c above b
    expect(tab.locator("[data-step]:visible [data-step-title]")).to_have_text(["a", "c", "b"])
    steps.nth(0).locator("[data-remove]").click()
    expect(tab.locator("[data-step]:visible")).to_have_count(2)
    tab.click("button:has-text('Save new version')")
    tab.wait_for_url(re.compile(rf"/workflows/{workflow.pk}/$"))
    definition = workflow.versions.get(number=2).definition
    assert [(s["name"], s["order"]) for s in definition["steps"]] == [("c", 1), ("b", 2)]


def test_build_a_map_step_inserting_the_list_and_the_item_from_the_names_panel(tab):
    tab.goto("/workflows/new")
    tab.fill("#id_name", "Per topic")
    tab.fill("#id_variables-0-name", "topics")
    tab.select_option("#id_variables-0-type", "JSON")
    tab.fill("#id_variables-0-sample", '["a", "b"]')
    tab.fill("#id_steps-0-name", "each")
    tab.select_option("#id_steps-0-type", "MAP")
    step = tab.locator("[data-step]").first
    expect(step.locator("#id_steps-0-template")).to_be_hidden()
    # A MAP's items take a bare expression; its inner step's templates see item and index.
    step.locator('[data-refs="variables"] button', has_text="input.topics").click()
    expect(tab.locator("#id_steps-0-map_items")).to_have_value("input.topics")
    tab.fill("#id_steps-0-map_step", '{"type": "TRANSFORM", "config": {"template": "#"}}')
    tab.locator("#id_steps-0-map_step").evaluate(
        "box => { const at = box.value.indexOf('#') + 1; box.setSelectionRange(at, at); }")
    step.locator("button.ref", has_text="index").click()
    expect(tab.locator("#id_steps-0-map_step")).to_have_value(
        '{"type": "TRANSFORM", "config": {"template": "#{{ index }}"}}')
    tab.click("button:has-text('Create workflow')")

    tab.wait_for_url(re.compile(r"/workflows/\d+/$"))
    workflow = Workflow.objects.get(name="Per topic")
    tab.click(".page-head >> text=Preview")
    tab.click("button:has-text('Run preview')")
    card = tab.locator("[data-testid=step-card][data-step-name=each]")
    expect(card).to_contain_text("COMPLETED")
    expect(card).to_contain_text("#1")  # the second item's output
    definition = workflow.versions.get(number=1).definition
    assert definition["steps"][0]["config"]["items"] == "input.topics"
    assert definition["steps"][0]["config"]["step"]["config"]["template"] == "#{{ index }}"
