"""Every trigger page needs a login and shows only the user's own triggers."""
from __future__ import annotations

import uuid

import pytest
from django.test import Client

from triggers.models import WorkflowTrigger

pytestmark = pytest.mark.django_db

PAGES = ["", "new", "{id}/", "{id}/edit", "{id}/activity", "{id}/secret", "{id}/delete"]
ACTIONS = ["{id}/toggle", "{id}/rotate", "{id}/execute", "{id}/delete", "{id}/edit", "new"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_anonymous_users_to_the_admin_login(webhook, path):
    url = f"/triggers/{path.format(id=webhook[0].pk)}"
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


@pytest.mark.parametrize("path", ACTIONS)
def test_actions_redirect_anonymous_users_and_change_nothing(webhook, path):
    trigger = webhook[0]
    response = Client().post(f"/triggers/{path.format(id=trigger.pk)}", {"is_active": "0", "name": "x"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    trigger.refresh_from_db()
    assert trigger.is_active and trigger.name == "Orders"
    assert WorkflowTrigger.objects.count() == 1


@pytest.mark.parametrize("path", [p for p in PAGES if "{id}" in p])
def test_another_users_trigger_is_a_404_page(other_page, webhook, path):
    response = other_page.get(f"/triggers/{path.format(id=webhook[0].pk)}")
    assert response.status_code == 404
    assert "Orders" not in response.content.decode()


@pytest.mark.parametrize("path", [p for p in ACTIONS if "{id}" in p])
def test_another_users_trigger_cannot_be_changed(other_page, webhook, path):
    trigger = webhook[0]
    response = other_page.post(f"/triggers/{path.format(id=trigger.pk)}",
                               {"is_active": "0", "name": "pwned", "config": "{}"})
    assert response.status_code == 404
    trigger.refresh_from_db()
    assert trigger.is_active and trigger.name == "Orders"
    assert WorkflowTrigger.objects.filter(pk=trigger.pk).exists()


@pytest.mark.parametrize("id", [uuid.uuid4(), "not-a-uuid", "123"])
def test_unknown_or_malformed_ids_are_404_pages(page, id):
    response = page.get(f"/triggers/{id}/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_the_list_shows_only_my_triggers(page, other_user, webhook):
    from triggers.tests.helpers import create_trigger, customer_workflow

    create_trigger(customer_workflow(other_user, name="Theirs"), "MANUAL", name="Their button")
    body = page.get("/triggers/").content.decode()
    assert "Orders" in body and "Their button" not in body


def test_posts_need_a_csrf_token(user, webhook):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    trigger = webhook[0]
    response = client.post(f"/triggers/{trigger.pk}/toggle", {"is_active": "0"})
    assert response.status_code == 403
    trigger.refresh_from_db()
    assert trigger.is_active


def test_get_is_refused_on_actions(page, webhook):
    for path in ("toggle", "rotate", "execute"):
        assert page.get(f"/triggers/{webhook[0].pk}/{path}").status_code == 405


def test_a_builder_who_is_not_staff_logs_in_on_the_pages_own_login(client, django_user_model):
    django_user_model.objects.create_user(username="plain", password="pw-plain-12345")
    page = client.get("/accounts/login/?next=/triggers/")
    assert page.status_code == 200 and b'name="username"' in page.content
    response = client.post("/accounts/login/", {"username": "plain", "password": "pw-plain-12345", "next": "/triggers/"})
    assert response.status_code == 302 and response["Location"] == "/triggers/"
    assert client.get("/triggers/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/triggers/").status_code == 302
