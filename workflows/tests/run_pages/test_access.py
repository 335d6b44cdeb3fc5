"""The execution and prompt pages need a login, show owners their own objects and staff
everyone's; another user's id is a 404 page, like a missing or malformed one."""
from __future__ import annotations

import uuid

import pytest
from django.test import Client

from workflows.models import ExecutionStatus, Prompt, WorkflowExecution
from workflows.services.workflows import prompt_create
from workflows.tests.run_pages.helpers import echo_workflow, make_run, text

pytestmark = pytest.mark.django_db

EXECUTION_PAGES = ["/executions/{id}/", "/executions/{id}/live"]
EXECUTION_ACTIONS = ["/executions/{id}/cancel", "/executions/{id}/retry"]
PROMPT_PAGES = ["/prompts/{id}/", "/prompts/{id}/edit"]


@pytest.fixture
def run(user):
    return make_run(echo_workflow(user, name="Owner's flow"), status="FAILED",
                    steps=[{"name": "step_1", "status": "FAILED"}],
                    error={"type": "TemplateError", "message": "boom", "step": "step_1"})


@pytest.fixture
def prompt(user):
    return prompt_create(owner=user, data={"name": "Owner's prompt", "template": "Hi {{ input.x }}"})


@pytest.mark.parametrize("path", ["/executions/", "/prompts/", "/prompts/new", *EXECUTION_PAGES, *PROMPT_PAGES])
def test_pages_send_anonymous_users_to_the_login_page(run, prompt, path):
    url = path.format(id=prompt.pk if "prompts" in path else run.pk)
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize("path", EXECUTION_ACTIONS)
def test_actions_send_anonymous_users_to_the_login_page_and_change_nothing(run, path):
    response = Client().post(path.format(id=run.pk))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert WorkflowExecution.objects.count() == 1
    run.refresh_from_db()
    assert run.status == ExecutionStatus.FAILED


def test_anonymous_prompt_create_is_refused(db):
    response = Client().post("/prompts/new", {"name": "x", "template": "y"})
    assert response.status_code == 302 and not Prompt.objects.exists()


@pytest.mark.parametrize("path", EXECUTION_PAGES)
def test_another_users_execution_is_a_404(other_page, run, path):
    response = other_page.get(path.format(id=run.pk))
    assert response.status_code == 404
    assert "Owner&#x27;s flow" not in text(response) and "Owner's flow" not in text(response)


@pytest.mark.parametrize("path", EXECUTION_ACTIONS)
def test_another_users_execution_cannot_be_cancelled_or_retried(other_page, run, path):
    assert other_page.post(path.format(id=run.pk)).status_code == 404
    assert WorkflowExecution.objects.count() == 1


@pytest.mark.parametrize("path", PROMPT_PAGES)
def test_another_users_prompt_is_a_404(other_page, prompt, path):
    response = other_page.get(path.format(id=prompt.pk))
    assert response.status_code == 404
    assert "Hi {{ input.x }}" not in text(response)


def test_another_users_prompt_cannot_be_edited(other_page, prompt):
    response = other_page.post(f"/prompts/{prompt.pk}/edit", {"name": "pwned", "template": "x"})
    assert response.status_code == 404
    prompt.refresh_from_db()
    assert prompt.name == "Owner's prompt"


@pytest.mark.parametrize("path", ["/executions/{u}/", "/executions/not-a-uuid/", "/prompts/999999/",
                                  "/prompts/abc/", "/executions/{u}/live"])
def test_unknown_or_malformed_ids_are_404_pages(page, path):
    response = page.get(path.format(u=uuid.uuid4()))
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_lists_show_only_my_objects(page, other_user, run, prompt):
    theirs = make_run(echo_workflow(other_user, name="Their flow"), status="COMPLETED")
    prompt_create(owner=other_user, data={"name": "Their prompt", "template": "x"})
    executions = text(page.get("/executions/"))
    assert str(run.pk)[:10] in executions and str(theirs.pk)[:10] not in executions
    assert "Their flow" not in executions
    prompts = text(page.get("/prompts/"))
    assert "Owner&#x27;s prompt" in prompts and "Their prompt" not in prompts


def test_the_workflow_filter_does_not_offer_other_users_workflows(page, other_user, run):
    theirs = echo_workflow(other_user, name="Their flow")
    body = text(page.get("/executions/"))
    assert "Their flow" not in body
    # Asking for it anyway lists nothing of theirs (the choice is refused, shown as an error).
    make_run(theirs, status="COMPLETED")
    response = page.get(f"/executions/?workflow={theirs.pk}")
    assert response.status_code == 200
    assert "Their flow" not in text(response)
    assert response.context["form"].errors["workflow"]


def test_staff_see_everyones_executions_and_prompts(staff_page, run, prompt):
    listing = text(staff_page.get("/executions/"))
    assert str(run.pk)[:10] in listing and "builder" in listing  # the owner column
    detail = staff_page.get(f"/executions/{run.pk}/")
    assert detail.status_code == 200 and "owner builder" in text(detail)
    assert staff_page.get(f"/executions/{run.pk}/live").status_code == 286  # finished: stop polling
    assert "Owner&#x27;s prompt" in text(staff_page.get("/prompts/"))
    assert staff_page.get(f"/prompts/{prompt.pk}/").status_code == 200
    assert staff_page.get(f"/prompts/{prompt.pk}/edit").status_code == 200


def test_nav_links_to_the_pages(page):
    body = text(page.get("/executions/"))
    for href in ('href="/executions/"', 'href="/prompts/"', 'href="/triggers/"'):
        assert href in body
    assert 'href="/executions/" aria-current="page"' in body
