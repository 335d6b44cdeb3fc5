"""``POST /api/events/``: owners emit custom events to their EVENT triggers."""
from __future__ import annotations

import pytest

from triggers.models import TriggerInvocation
from workflows.models import WorkflowExecution

from .helpers import event_trigger, target_workflow

pytestmark = pytest.mark.django_db


def emit(client, name="order.created", payload=None, path="/api/events/", **extra):
    body = {"name": name} if payload is None else {"name": name, "payload": payload}
    return client.post(path, body, format="json", **extra)


def test_anonymous_callers_are_refused(anon, user):
    event_trigger(target_workflow(user), event="order.created")
    response = emit(anon, payload={"x": 1})
    assert response.status_code == 401
    assert not TriggerInvocation.objects.exists()


@pytest.mark.parametrize("path", ["/api/events/", "/api/events"])
def test_matching_triggers_start_and_are_listed(api, user, path):
    target = target_workflow(user)
    paid = event_trigger(target, event="order.created", filter={"order.state": "paid", "order.total": 30})
    anything = event_trigger(target, event="order.created")
    event_trigger(target, event="order.created", filter={"order.state": "open"})
    event_trigger(target, event="order.cancelled")

    response = emit(api, payload={"order": {"state": "paid", "total": 30.0}, "status": "new"}, path=path)

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["event"] == "order.created" and body["event_id"]
    assert [m["trigger_id"] for m in body["matched"]] == [str(paid.pk), str(anything.pk)]
    for match in body["matched"]:
        assert match["status"] == "ACCEPTED" and match["error"] == ""
        execution = WorkflowExecution.objects.get(pk=match["execution_id"])
        assert execution.trigger_type == "EVENT" and str(execution.trigger_id) == match["trigger_id"]
        assert execution.metadata["payload"] == {"event": "order.created", "order": {"state": "paid", "total": 30.0},
                                                 "status": "new"}
        assert execution.input == {"status": "new", "output": None}
        assert str(TriggerInvocation.objects.get(execution=execution).pk) == match["invocation_id"]


def test_no_match_answers_an_empty_list(api, user):
    event_trigger(target_workflow(user), event="order.created", filter={"x": 1})
    response = emit(api, payload={"x": 2})
    assert response.status_code == 202 and response.json()["matched"] == []
    response = emit(api)  # no payload: {}
    assert response.status_code == 202 and response.json()["matched"] == []


@pytest.mark.parametrize("name", ["execution.completed", "execution.failed", "execution.anything"])
def test_platform_names_are_reserved(api, user, name):
    event_trigger(target_workflow(user), event="execution.completed")
    response = emit(api, name=name, payload={"workflow": 1})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_event" and "reserved" in response.json()["message"]
    assert "name" in response.json()["extra"]["errors"]
    assert not TriggerInvocation.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "order.created", "payload": [1, 2]}, "payload"),
        ({"name": "order.created", "payload": "text"}, "payload"),
        ({"name": "order.created", "payload": 3}, "payload"),
        ({"name": "order.created", "payload": {"event": "spoofed"}}, "payload"),
        ({"name": "Order Created", "payload": {}}, "name"),
        ({"name": "", "payload": {}}, "name"),
        ({"payload": {}}, "name"),
        ({"name": "x" * 101}, "name"),
    ],
)
def test_bad_bodies_are_refused(api, user, body, field):
    event_trigger(target_workflow(user), event="order.created")
    response = api.post("/api/events/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["extra"]["errors"], response.json()
    assert not TriggerInvocation.objects.exists()


def test_a_body_that_is_not_an_object_is_refused(api):
    response = api.post("/api/events/", [1], format="json")
    assert response.status_code == 400


def test_events_of_one_user_never_reach_another(api, other_api, user, other_user):
    mine = event_trigger(target_workflow(user), event="order.created")
    theirs = event_trigger(target_workflow(other_user), event="order.created")
    assert [m["trigger_id"] for m in emit(api, payload={}).json()["matched"]] == [str(mine.pk)]
    assert [m["trigger_id"] for m in emit(other_api, payload={}).json()["matched"]] == [str(theirs.pk)]
    assert WorkflowExecution.objects.filter(trigger=mine).count() == 1
    assert WorkflowExecution.objects.filter(trigger=theirs).count() == 1


def test_a_repeated_idempotency_key_starts_nothing_new(api, user):
    trigger = event_trigger(target_workflow(user), event="order.created")
    first = emit(api, payload={"n": 1}, HTTP_IDEMPOTENCY_KEY="order-42").json()
    again = emit(api, payload={"n": 1}, HTTP_IDEMPOTENCY_KEY="order-42").json()
    assert first["event_id"] == again["event_id"] == "order-42"
    assert again["matched"][0]["status"] == "DUPLICATE"
    assert again["matched"][0]["execution_id"] == first["matched"][0]["execution_id"]
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1
    other = emit(api, payload={"n": 1}, HTTP_IDEMPOTENCY_KEY="order-43").json()
    assert other["matched"][0]["status"] == "ACCEPTED"
    long_key = emit(api, payload={}, HTTP_IDEMPOTENCY_KEY="k" * 255).json()
    assert long_key["matched"][0]["status"] == "ACCEPTED", "long keys are hashed into the delivery id"


def test_invalid_input_is_reported_per_match(api, user):
    strict = target_workflow(user, variables=[{"name": "customer", "type": "STRING", "required": True}])
    refused = event_trigger(strict, event="order.created")
    accepted = event_trigger(target_workflow(user), event="order.created")
    body = emit(api, payload={"customer": 42}).json()
    assert [(m["trigger_id"], m["status"]) for m in body["matched"]] == [
        (str(refused.pk), "INVALID_INPUT"), (str(accepted.pk), "ACCEPTED")]
    assert "customer" in body["matched"][0]["error"] and body["matched"][0]["execution_id"] is None


def test_the_endpoint_is_in_the_schema_without_warnings(tmp_path):
    from django.core.management import call_command

    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    assert "/api/events/:" in text and "events_emit" in text
