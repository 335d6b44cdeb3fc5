"""The trigger pages follow the other pages' rule (owners their own triggers, staff
everyone's; another user's id is a 404) and link runs to their execution pages."""
from __future__ import annotations

import pytest
from django.test import Client

from triggers.services.firing import trigger_fire
from triggers.tests.helpers import create_trigger, customer_workflow
from workflows.models import WorkflowExecution

from .helpers import text

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_page(django_user_model) -> Client:
    staff = django_user_model.objects.create_user(username="ops", password="pw-ops-123", is_staff=True)
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def theirs(other_user):
    return create_trigger(customer_workflow(other_user, name="Their flow"), "MANUAL", name="Their button")[0]


def test_staff_see_everyones_triggers_with_the_owner(staff_page, manual, theirs):
    body = text(staff_page.get("/triggers/"))
    assert "Button" in body and "Their button" in body
    assert 'data-testid="owner">· intruder<' in body and 'data-testid="owner">· builder<' in body
    filtered = text(staff_page.get(f"/triggers/?workflow={theirs.workflow_id}"))
    assert "Their button" in filtered and ">Button<" not in filtered


def test_owners_still_see_only_their_own(page, manual, theirs):
    body = text(page.get("/triggers/"))
    assert "Button" in body and "Their button" not in body and "Their flow" not in body
    assert 'data-testid="owner"' not in body
    assert page.get(f"/triggers/{theirs.pk}/").status_code == 404
    assert page.get(f"/triggers/?workflow={theirs.workflow_id}").status_code == 200
    assert "Their button" not in text(page.get(f"/triggers/?workflow={theirs.workflow_id}"))


def test_staff_open_another_users_trigger_with_its_runs(staff_page, theirs):
    execution = trigger_fire(trigger=theirs, inputs={"customer": "Ada"}, payload={}).execution
    response = staff_page.get(f"/triggers/{theirs.pk}/")
    assert response.status_code == 200
    body = text(response)
    assert "owner intruder" in body
    assert [e.pk for e in response.context["executions"]] == [execution.pk], "the owner's runs, seen by staff"
    assert f'href="/executions/{execution.pk}/"' in body
    assert staff_page.get(f"/triggers/{theirs.pk}/activity").status_code == 200


def test_staff_act_on_another_users_trigger_like_the_owner(staff_page, theirs):
    response = staff_page.post(f"/triggers/{theirs.pk}/execute", {"input": '{"customer": "Ada"}'}, follow=True)
    execution = WorkflowExecution.objects.get()
    assert execution.trigger == theirs
    assert f'href="/executions/{execution.pk}/"' in text(response)
    staff_page.post(f"/triggers/{theirs.pk}/toggle", {"is_active": "0"})
    theirs.refresh_from_db()
    assert theirs.is_active is False


def test_the_detail_links_the_workflow_page_and_runs_to_their_pages(page, manual):
    execution = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}).execution
    body = text(page.get(f"/triggers/{manual.pk}/"))
    assert f'href="/workflows/{manual.workflow_id}/" data-testid="workflow-link"' in body
    assert body.count(f'href="/executions/{execution.pk}/"') == 2, "in the runs and in the invocations"
    assert "/api/executions/" not in body and "/api/workflows/" not in body
    partial = text(page.get(f"/triggers/{manual.pk}/activity"))
    assert f'href="/executions/{execution.pk}/"' in partial and "/api/executions/" not in partial


def test_htmx_execute_links_the_new_run_to_its_page(page, manual):
    response = page.post(f"/triggers/{manual.pk}/execute", {"input": '{"customer": "Ada"}'}, HTTP_HX_REQUEST="true")
    execution = WorkflowExecution.objects.get()
    assert f'href="/executions/{execution.pk}/"' in text(response)

