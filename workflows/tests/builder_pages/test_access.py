"""Every workflow page needs a login; owners see their own workflows, staff see all,
and another user's id is a 404 that changes nothing."""
from __future__ import annotations

import pytest
from django.test import Client

from workflows.models import Workflow, WorkflowExecution, WorkflowVersion

from .helpers import editor_post, text

pytestmark = pytest.mark.django_db

PAGES = ["", "new", "{id}/", "{id}/edit", "{id}/preview", "{id}/run"]
ACTIONS = ["new", "{id}/edit", "{id}/preview", "{id}/run", "{id}/versions/1/restore"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_anonymous_users_to_the_login(flow, path):
    url = f"/workflows/{path.format(id=flow.pk)}"
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize("path", ACTIONS)
def test_actions_send_anonymous_users_to_the_login_and_change_nothing(flow, path):
    response = Client().post(f"/workflows/{path.format(id=flow.pk)}", editor_post(name="pwned"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    assert Workflow.objects.count() == 1 and WorkflowVersion.objects.count() == 1
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("path", [p for p in PAGES if "{id}" in p])
def test_another_users_workflow_is_a_404_page(other_page, flow, path):
    response = other_page.get(f"/workflows/{path.format(id=flow.pk)}")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert "Summarise ticket" not in text(response)


@pytest.mark.parametrize("path", [p for p in ACTIONS if "{id}" in p])
def test_another_users_workflow_cannot_be_changed_run_or_previewed(other_page, flow, path):
    response = other_page.post(f"/workflows/{path.format(id=flow.pk)}", editor_post(name="pwned"))
    assert response.status_code == 404
    flow.refresh_from_db()
    assert flow.name == "Summarise ticket"
    assert WorkflowVersion.objects.filter(workflow=flow).count() == 1
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("id", ["999999", "abc", "0"])
def test_unknown_or_malformed_ids_are_404_pages(page, id):
    response = page.get(f"/workflows/{id}/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_the_list_shows_only_my_workflows(page, other_user, flow):
    from workflows.tests.factories import make_workflow

    make_workflow(other_user, name="Someone else's", steps=[{"name": "s", "type": "TRANSFORM",
                                                             "config": {"template": "x"}}])
    body = text(page.get("/workflows/"))
    assert "Summarise ticket" in body and "Someone else" not in body


def test_staff_see_every_workflow_and_its_owner(staff_page, flow):
    body = text(staff_page.get("/workflows/"))
    assert "Summarise ticket" in body and "builder" in body  # the owner column
    for path in ("", "edit", "preview", "run"):
        assert staff_page.get(f"/workflows/{flow.pk}/{path}").status_code == 200


def test_the_home_page_is_the_workflow_list(page):
    response = page.get("/")
    assert response.status_code == 302 and response["Location"] == "/workflows/"


def test_logging_in_lands_on_the_workflows(django_user_model):
    django_user_model.objects.create_user(username="plain", password="pw-plain-12345")
    response = Client().post("/accounts/login/", {"username": "plain", "password": "pw-plain-12345"})
    assert response.status_code == 302 and response["Location"] == "/workflows/"


def test_every_page_has_the_navigation_with_workflows_current(page, flow):
    for path in ("", f"{flow.pk}/", f"{flow.pk}/edit", f"{flow.pk}/preview", "new"):
        body = text(page.get(f"/workflows/{path}"))
        assert 'href="/workflows/" aria-current="page">Workflows</a>' in body, path
        assert 'href="/triggers/"' in body
