"""/prompts/: list with usage, detail with the workflows that use a prompt, create and edit
through prompt_create / prompt_update with errors next to the fields."""
from __future__ import annotations

import pytest

from workflows.models import Prompt, WorkflowStep
from workflows.services.workflows import prompt_create
from workflows.tests.factories import make_workflow
from workflows.tests.run_pages.helpers import flashes, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def prompt(user):
    return prompt_create(owner=user, data={"name": "Short summary", "template": "Summarise {{ input.topic }}",
                                           "system": "Be brief.",
                                           "model_config": {"provider": "echo", "model": "echo"}})


def _using(owner, prompt, name: str, step: str = "draft"):
    return make_workflow(owner, name=name, variables=[{"name": "topic", "type": "STRING", "required": True}],
                         steps=[{"name": step, "type": "PROMPT", "prompt": prompt, "config": {}}])


def test_the_list_shows_each_prompt_with_its_use(page, user, prompt):
    _using(user, prompt, "Flow A")
    _using(user, prompt, "Flow B")
    prompt_create(owner=user, data={"name": "Unused one", "template": "x"})
    response = page.get("/prompts/")
    body = text(response)
    assert [p.name for p in response.context["prompts"]] == ["Short summary", "Unused one"]
    assert "2 workflows" in body and "unused" in body and "echo:echo" in body
    assert f'href="/prompts/{prompt.pk}/"' in body


def test_search_filters_by_name_or_template(page, user, prompt):
    prompt_create(owner=user, data={"name": "Translate", "template": "In French: {{ input.text }}"})
    assert [p.name for p in page.get("/prompts/?q=french").context["prompts"]] == ["Translate"]
    assert [p.name for p in page.get("/prompts/?q=summ").context["prompts"]] == ["Short summary"]
    assert "No prompt matches" in text(page.get("/prompts/?q=nothing-like-it"))


def test_empty_state_says_what_a_prompt_is_for(page):
    body = text(page.get("/prompts/"))
    assert 'data-testid="empty"' in body and "PROMPT steps" in body and 'href="/prompts/new"' in body


def test_detail_lists_the_workflows_and_steps_that_use_it(page, user, prompt):
    flow = _using(user, prompt, "Flow A", step="summarise")
    body = text(page.get(f"/prompts/{prompt.pk}/"))
    assert "Summarise {{ input.topic }}" in body and "Be brief." in body
    assert f'href="/workflows/{flow.pk}/"' in body and "<code>summarise</code>" in body
    assert f'href="/executions/?workflow={flow.pk}"' in body
    assert 'data-testid="model-config">{&quot;model&quot;: &quot;echo&quot;, &quot;provider&quot;: &quot;echo&quot;}' in body


def test_detail_of_an_unused_prompt_says_how_to_use_it(page, prompt):
    assert "No workflow uses this prompt yet" in text(page.get(f"/prompts/{prompt.pk}/"))


def test_create_a_prompt(page, user):
    form = page.get("/prompts/new")
    assert form.status_code == 200 and 'name="template"' in text(form)
    response = page.post("/prompts/new", {"name": "Greeting", "template": "Hello {{ input.name }}",
                                          "system": "", "model_config": '{"provider": "echo", "model": "echo"}'},
                         follow=True)
    prompt = Prompt.objects.get()
    assert response.redirect_chain[-1][0] == f"/prompts/{prompt.pk}/"
    assert prompt.owner == user and prompt.template == "Hello {{ input.name }}"
    assert prompt.model_config == {"provider": "echo", "model": "echo"}
    assert any("created" in m for m in flashes(response))


@pytest.mark.parametrize("data, field, message", [
    ({"name": "", "template": "x"}, "name", "required"),
    ({"name": "Bad", "template": "Hello {{ input.name "}, "template", ""),
    ({"name": "Bad", "template": "ok", "system": "{% if %}"}, "system", ""),
    ({"name": "Bad", "template": "ok", "model_config": "{nope"}, "model_config", "Not valid JSON (line 1"),
    ({"name": "Bad", "template": "ok", "model_config": "[1]"}, "model_config", "Expected a JSON object"),
    ({"name": "Bad", "template": "ok", "model_config": '{"provider": ""}'}, "model_config", "non-empty"),
])
def test_create_errors_are_shown_next_to_the_field(page, data, field, message):
    response = page.post("/prompts/new", data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field])
    assert 'class="field has-error"' in text(response) and 'role="alert"' in text(response)
    assert not Prompt.objects.exists()


def test_edit_a_prompt_gives_the_workflows_using_it_a_new_version(page, user, prompt):
    flow = _using(user, prompt, "Flow A")
    before = flow.versions.count()
    form = text(page.get(f"/prompts/{prompt.pk}/edit"))
    assert "Summarise {{ input.topic }}" in form and "saving gives each a new version" in form
    response = page.post(f"/prompts/{prompt.pk}/edit", {"name": "Short summary", "template": "TL;DR {{ input.topic }}",
                                                         "system": "", "model_config": ""}, follow=True)
    assert response.redirect_chain[-1][0] == f"/prompts/{prompt.pk}/"
    prompt.refresh_from_db()
    assert prompt.template == "TL;DR {{ input.topic }}" and prompt.system == "" and prompt.model_config == {}
    assert flow.versions.count() == before + 1
    assert any("1 workflow(s) using it got a new version" in m for m in flashes(response))


def test_edit_errors_are_shown_next_to_the_field_and_nothing_changes(page, user, prompt):
    response = page.post(f"/prompts/{prompt.pk}/edit", {"name": "Short summary", "template": "{{ broken"})
    assert response.status_code == 200 and "template" in response.context["form"].errors
    prompt.refresh_from_db()
    assert prompt.template == "Summarise {{ input.topic }}"
    assert WorkflowStep.objects.count() == 0
