"""EVENT trigger config (``triggers/services/events.py::event_config_validate``) through the API."""
from __future__ import annotations

import pytest

from triggers.models import WorkflowTrigger

from .helpers import source_workflow, target_workflow

pytestmark = pytest.mark.django_db


def create(api, workflow, config):
    return api.post("/api/triggers/", {"workflow": workflow.pk, "type": "EVENT", "name": "On event",
                                       "config": config}, format="json")


def test_event_trigger_is_created_with_event_and_filter(api, user):
    source, target = source_workflow(user), target_workflow(user)
    response = create(api, target, {"event": "execution.failed", "filter": {"workflow": source.pk}})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["type"] == "EVENT" and body["secret"] is None and body["webhook_url"] is None
    assert body["config"] == {"event": "execution.failed", "filter": {"workflow": source.pk}}


def test_filter_defaults_to_empty_and_custom_names_and_mappings_are_accepted(api, user):
    target = target_workflow(user)
    response = create(api, target, {"event": "order.created-v2_eu",
                                    "input_mapping": {"status": "payload.order.state"}})
    assert response.status_code == 201, response.json()
    assert WorkflowTrigger.objects.get().config == {
        "event": "order.created-v2_eu", "filter": {}, "input_mapping": {"status": "payload.order.state"},
    }


def test_filter_takes_dotted_paths_and_scalars(api, user):
    response = create(api, target_workflow(user), {"event": "execution.completed", "filter": {
        "output.category": "billing", "output.score": 3, "output.flag": True, "error": None}})
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("config", "field", "needle"),
    [
        ({}, "config.event", "non-empty string"),
        ({"event": ""}, "config.event", "non-empty string"),
        ({"event": 12}, "config.event", "non-empty string"),
        ({"event": "Order Created"}, "config.event", "is not an event name"),
        ({"event": "x" * 101}, "config.event", "at most 100"),
        ({"event": "execution.started"}, "config.event", "reserved"),
        ({"event": "order.created", "filter": ["workflow"]}, "config.filter", "must be an object"),
        ({"event": "order.created", "filter": {"customer": {"id": 1}}}, "config.filter.customer", "string, number"),
        ({"event": "order.created", "filter": {"tags": ["a"]}}, "config.filter.tags", "string, number"),
        ({"event": "order.created", "filter": {"a..b": 1}}, "config.filter", "dotted path"),
        ({"event": "order.created", "filter": {"": 1}}, "config.filter", "dotted path"),
        ({"event": "order.created", "filter": {"event": "order.created"}}, "config.filter.event", "already names"),
        ({"event": "execution.completed", "filter": {"customer": "x"}}, "config.filter.customer", "never match"),
        ({"event": "execution.failed", "filter": {"workflow": "1"}}, "config.filter.workflow", "integer id"),
        ({"event": "execution.failed", "filter": {"workflow": True}}, "config.filter.workflow", "integer id"),
        ({"event": "execution.failed", "filter": {"workflow": 987654}}, "config.filter.workflow", "integer id"),
        ({"event": "order.created", "cron": "* * * * *"}, "config", "do not take config"),
        ({"event": "order.created", "input_mapping": {"nope": "payload.x"}}, "config.input_mapping.nope",
         "not a variable"),
        ({"event": "order.created", "input_mapping": {"status": "payload.x |"}}, "config.input_mapping.status",
         "input_mapping"),
    ],
)
def test_invalid_config_is_refused_with_the_field_named(api, user, config, field, needle):
    response = create(api, target_workflow(user), config)
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_trigger_config"
    assert field in body["extra"]["errors"], body
    assert needle in body["message"]
    assert not WorkflowTrigger.objects.exists()


def test_filter_on_another_users_workflow_is_refused(api, user, other_user):
    theirs = source_workflow(other_user)
    response = create(api, target_workflow(user), {"event": "execution.failed", "filter": {"workflow": theirs.pk}})
    assert response.status_code == 400
    assert "one of your workflows" in response.json()["message"]


def test_update_validates_the_new_config(api, user):
    trigger_id = create(api, target_workflow(user), {"event": "order.created"}).json()["id"]
    response = api.patch(f"/api/triggers/{trigger_id}/", {"config": {"event": "execution.nope"}}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid_trigger_config"
    response = api.patch(f"/api/triggers/{trigger_id}/", {"config": {"event": "order.paid", "filter": {"x": 1}}},
                         format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["config"] == {"event": "order.paid", "filter": {"x": 1}}


def test_event_triggers_cannot_be_executed_by_hand(api, user):
    trigger_id = create(api, target_workflow(user), {"event": "order.created"}).json()["id"]
    response = api.post(f"/api/triggers/{trigger_id}/execute", {"input": {}}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "trigger_not_executable"
