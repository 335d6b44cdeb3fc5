"""MANUAL, WEBHOOK and API triggers end to end: a real Celery worker on PostgreSQL + Redis
runs each to COMPLETED, with trigger_type set and trigger.payload usable in templates."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from triggers.tests.helpers import body_bytes, create_trigger, deliver, signed_headers
from workflows.tests.durability.helpers import wait_finished
from workflows.tests.factories import make_workflow

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def order_workflow(user):
    return make_workflow(
        user,
        variables=[{"name": "customer", "type": "STRING", "required": True}],
        steps=[
            {"name": "greet", "type": "TRANSFORM",
             "config": {"template": "{{ trigger.type }}: {{ input.customer }} / {{ trigger.payload.customer }}"
                                    "{% if trigger.payload.order is defined %} #{{ trigger.payload.order.id }}"
                                    "{% endif %}"}},
            {"name": "shout", "type": "TRANSFORM", "config": {"template": "{{ steps.greet.output | upper }}"}},
        ],
    )


def test_manual_trigger_runs_to_completed(api, order_workflow, shared_worker):
    trigger, _ = create_trigger(order_workflow, "MANUAL")
    response = api.post(f"/api/triggers/{trigger.pk}/execute",
                        {"input": {"customer": "Ada"}, "customer": "Ada Lovelace"}, format="json")
    assert response.status_code == 202, response.json()
    finished = wait_finished(response.json()["execution_id"], timeout=30)
    assert finished.status == "COMPLETED", finished.error
    assert finished.trigger_type == "MANUAL" and finished.trigger_id == trigger.pk
    assert finished.output == "MANUAL: ADA / ADA LOVELACE"


def test_webhook_trigger_runs_to_completed(order_workflow, shared_worker):
    trigger, secret = create_trigger(order_workflow, "WEBHOOK")
    body = body_bytes({"customer": "Grace", "order": {"id": "o-42"}, "ignored": True})
    response = deliver(APIClient(), trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 202, response.json()
    finished = wait_finished(response.json()["execution_id"], timeout=30)
    assert finished.status == "COMPLETED", finished.error
    assert finished.trigger_type == "WEBHOOK" and finished.trigger_id == trigger.pk
    assert finished.output == "WEBHOOK: GRACE / GRACE #O-42"


def test_api_trigger_runs_to_completed(order_workflow, shared_worker):
    trigger, key = create_trigger(order_workflow, "API")
    response = APIClient().post(f"/api/triggers/{trigger.pk}/execute",
                                {"input": {"customer": "Linus"}, "customer": "L. T."}, format="json",
                                HTTP_X_API_KEY=key)
    assert response.status_code == 202, response.json()
    finished = wait_finished(response.json()["execution_id"], timeout=30)
    assert finished.status == "COMPLETED", finished.error
    assert finished.trigger_type == "API" and finished.started_by is None
    assert finished.output == "API: LINUS / L. T."
