"""Prompts CRUD: ownership, validation, in-use protection, versions of workflows using them."""
from __future__ import annotations

import pytest

from workflows.models import Prompt, Workflow


@pytest.mark.django_db
def test_prompt_crud_round_trip(api):
    created = api.post(
        "/api/prompts/",
        {"name": "Summary", "template": "Summarise {{ input.text }}", "model_config": {"provider": "echo", "model": "echo"}},
        format="json",
    )
    assert created.status_code == 201, created.json()
    prompt_id = created.json()["id"]
    assert created.json()["system"] == ""

    listed = api.get("/api/prompts")
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["results"]] == [prompt_id]

    assert api.get(f"/api/prompts/{prompt_id}").json()["name"] == "Summary"
    patched = api.patch(f"/api/prompts/{prompt_id}/", {"system": "Be brief."}, format="json")
    assert patched.status_code == 200
    assert patched.json()["system"] == "Be brief."
    assert patched.json()["template"] == "Summarise {{ input.text }}"

    put = api.put(f"/api/prompts/{prompt_id}", {"name": "Summary 2", "template": "T"}, format="json")
    assert put.status_code == 200
    assert put.json()["name"] == "Summary 2"

    assert api.delete(f"/api/prompts/{prompt_id}/").status_code == 204
    assert not Prompt.objects.filter(pk=prompt_id).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "template": "{{ unclosed "}, "template"),
        ({"name": "x", "template": "ok", "system": "{% if %}"}, "system"),
        ({"name": "x", "template": "ok", "model_config": "echo"}, "model_config"),
        ({"name": "x", "template": "ok", "model_config": {"provider": 3}}, "model_config.provider"),
        ({"template": "ok"}, "name"),
        ({"name": "x"}, "template"),
    ],
)
def test_invalid_prompt_is_rejected_and_nothing_is_saved(api, body, field):
    response = api.post("/api/prompts/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["extra"]["errors"]
    assert response.json()["message"]
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_other_users_prompt_is_404_for_every_verb(api, other_prompt):
    url = f"/api/prompts/{other_prompt.pk}/"
    assert api.get(url).status_code == 404
    assert api.put(url, {"name": "mine", "template": "t"}, format="json").status_code == 404
    assert api.patch(url, {"name": "mine"}, format="json").status_code == 404
    assert api.delete(url).status_code == 404
    other_prompt.refresh_from_db()
    assert other_prompt.name == "Secret"
    assert api.get("/api/prompts/").json()["count"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "1.5", "99999999999999999999999"])
def test_malformed_prompt_id_is_404(api, bad_id):
    response = api.get(f"/api/prompts/{bad_id}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_deleting_a_prompt_used_by_a_step_answers_409_naming_the_workflows(api, prompt, create_workflow):
    create_workflow(
        name="Uses prompt",
        steps=[{"name": "ask", "order": 1, "type": "PROMPT", "prompt": prompt.pk, "config": {}}],
    )
    response = api.delete(f"/api/prompts/{prompt.pk}/")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "prompt_in_use"
    assert "Uses prompt" in body["message"]
    assert [w["name"] for w in body["extra"]["workflows"]] == ["Uses prompt"]
    assert Prompt.objects.filter(pk=prompt.pk).exists()


@pytest.mark.django_db
def test_updating_a_prompt_makes_a_new_version_of_workflows_using_it(api, prompt, create_workflow):
    created = create_workflow(
        name="Uses prompt",
        steps=[{"name": "ask", "order": 1, "type": "PROMPT", "prompt": prompt.pk, "config": {}}],
    )
    workflow = Workflow.objects.get(pk=created["id"])
    assert created["version"] == 1

    api.patch(f"/api/prompts/{prompt.pk}/", {"template": "New text {{ input.name }}"}, format="json")
    latest = workflow.versions.order_by("-number").first()
    assert latest.number == 2
    assert latest.definition["steps"][0]["prompt"]["template"] == "New text {{ input.name }}"

    # An update that changes nothing makes no version.
    api.patch(f"/api/prompts/{prompt.pk}/", {"template": "New text {{ input.name }}"}, format="json")
    assert workflow.versions.count() == 2
