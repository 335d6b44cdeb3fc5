"""Save-time checks of a definition (issue 10 item 2): names the templates read, providers.

Refused with a 400 naming the step and the field, or saved with ``warnings`` when the
template guards the name (``is defined``, ``{% if ... is defined %}``, ``| default``).
"""
from __future__ import annotations

import pytest

from providers.models import ProviderConnection
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


def _transform(name: str, template: str, order: int) -> dict:
    return {"name": name, "order": order, "type": "TRANSFORM", "config": {"template": template}}


def _post(api, workflow_payload, **overrides):
    return api.post("/api/workflows/", workflow_payload(**overrides), format="json")


def _refused(response, path: str) -> str:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_definition"
    assert path in body["extra"]["errors"], body["extra"]["errors"]
    return body["extra"]["errors"][path][0]


def test_a_misspelt_variable_is_refused_naming_step_and_field(api, workflow_payload):
    response = _post(api, workflow_payload, steps=[_transform("greet", "Hello {{ input.nmae }}", 1)])
    message = _refused(response, "steps[0].config.template")
    assert 'Step "greet"' in message and "input.nmae" in message and "name, times" in message
    assert "steps[0].config.template" in response.json()["message"]
    assert Workflow.objects.count() == 0


def test_a_later_step_is_refused(api, workflow_payload):
    response = _post(api, workflow_payload, steps=[
        _transform("first", "{{ steps.second.output }}", 1), _transform("second", "x", 2),
    ])
    message = _refused(response, "steps[0].config.template")
    assert "steps.second" in message and "later" in message


def test_the_step_itself_and_a_missing_step_are_refused(api, workflow_payload):
    response = _post(api, workflow_payload, steps=[
        _transform("first", "{{ steps.first.output }}", 1), _transform("second", "{{ steps.nope.output }}", 2),
    ])
    assert "as this step" in _refused(response, "steps[0].config.template")
    assert "names no step" in response.json()["extra"]["errors"]["steps[1].config.template"][0]


def test_condition_expressions_and_unknown_names_are_checked(api, workflow_payload):
    response = _post(api, workflow_payload, steps=[
        {"name": "check", "order": 1, "type": "CONDITION", "config": {"expression": "input.tims > 1"}},
        _transform("out", "{{ inptu.name }}", 2),
    ])
    assert "input.tims" in _refused(response, "steps[0].config.expression")
    assert '"inptu" is not defined' in response.json()["extra"]["errors"]["steps[1].config.template"][0]


def test_linked_prompt_templates_are_checked(api, workflow_payload, user):
    from workflows.models import Prompt

    prompt = Prompt.objects.create(owner=user, name="P", template="About {{ input.topic }}",
                                   model_config={"provider": "echo", "model": "echo"})
    response = _post(api, workflow_payload, steps=[{"name": "ask", "order": 1, "type": "PROMPT", "prompt": prompt.pk}])
    assert "input.topic" in _refused(response, "steps[0].prompt.template")


@pytest.mark.parametrize("template", [
    "{% if input.tone is defined %}Tone: {{ input.tone }}{% endif %}{{ input.name }}",
    "{{ input.tone | default('plain') }} {{ input.name }}",
    "{{ input.tone if input.tone is defined else 'plain' }}",
])
def test_a_guarded_missing_name_saves_with_a_warning(api, workflow_payload, template):
    response = _post(api, workflow_payload, steps=[_transform("greet", template, 1)])
    assert response.status_code == 201, response.json()
    warnings = response.json()["warnings"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["path"] == "steps[0].config.template"
    assert warnings[0]["step"] == "greet" and warnings[0]["field"] == "config.template"
    assert "input.tone" in warnings[0]["message"]


def test_a_clean_definition_saves_with_no_warnings(api, workflow_payload):
    response = _post(api, workflow_payload)
    assert response.status_code == 201, response.json()
    assert response.json()["warnings"] == []


def test_update_and_restore_answer_warnings_and_refuse_bad_names(api, workflow_payload):
    created = _post(api, workflow_payload).json()
    url = f"/api/workflows/{created['id']}/"
    bad = api.patch(url, {"steps": [_transform("greet", "{{ input.nmae }}", 1)]}, format="json")
    _refused(bad, "steps[0].config.template")
    guarded = api.patch(url, {"steps": [_transform("greet", "{{ input.x | default('') }}", 1)]}, format="json")
    assert guarded.status_code == 200 and guarded.json()["warnings"][0]["step"] == "greet"
    restored = api.post(f"{url}versions/1/restore", format="json")
    assert restored.status_code == 200 and restored.json()["warnings"] == []


def test_removing_a_variable_a_step_reads_is_refused(api, workflow_payload):
    created = _post(api, workflow_payload).json()
    response = api.patch(f"/api/workflows/{created['id']}/", {"variables": [{"name": "name"}]}, format="json")
    assert "input.times" in _refused(response, "steps[1].config.expression")


def test_an_unknown_provider_is_refused(api, workflow_payload):
    step = {"name": "ask", "order": 1, "type": "PROMPT",
            "config": {"template": "Hi {{ input.name }}", "model": {"provider": "opneai", "model": "gpt-4o-mini"}}}
    message = _refused(_post(api, workflow_payload, steps=[step]), "steps[0].config.model.provider")
    assert '"opneai"' in message and "openai" in message and 'Step "ask"' in message


def test_a_connection_must_exist_and_be_active(api, workflow_payload):
    step = {"name": "ask", "order": 1, "type": "PROMPT",
            "config": {"template": "Hi", "models": [{"provider": "local", "model": "llama"}]}}
    _refused(_post(api, workflow_payload, steps=[step]), "steps[0].config.models[0].provider")
    connection = ProviderConnection.objects.create(name="local", base_url="http://127.0.0.1:9/v1", is_active=False)
    _refused(_post(api, workflow_payload, steps=[step]), "steps[0].config.models[0].provider")
    connection.is_active = True
    connection.save()
    response = _post(api, workflow_payload, steps=[step])
    assert response.status_code == 201, response.json()


def test_a_provider_without_its_key_saves_with_a_warning(api, workflow_payload, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "PROVIDERS": {}}
    step = {"name": "ask", "order": 1, "type": "PROMPT",
            "config": {"template": "Hi", "model": {"provider": "openai", "model": "gpt-4o-mini"}}}
    response = _post(api, workflow_payload, steps=[step])
    assert response.status_code == 201, response.json()
    assert "OPENAI_API_KEY" in response.json()["warnings"][0]["message"]


def test_pages_can_check_without_saving(user, workflow_payload):
    from workflows.services.workflows import workflow_definition_check

    body = workflow_payload(steps=[_transform("greet", "{{ input.nmae }}", 1)])
    check = workflow_definition_check(owner=user, steps=body["steps"], variables=body["variables"])
    assert not check.ok and "steps[0].config.template" in check.errors
    assert Workflow.objects.count() == 0
