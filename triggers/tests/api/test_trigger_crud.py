"""/api/triggers/ CRUD, ownership, config validation, secrets shown once, detail metrics."""
from __future__ import annotations

import pytest

from triggers.models import TriggerInvocation, WorkflowTrigger
from triggers.services.firing import trigger_fire
from triggers.tests.helpers import customer_workflow

pytestmark = pytest.mark.django_db


def create(api, workflow, type="MANUAL", **body):
    return api.post("/api/triggers/", {"workflow": workflow.pk, "type": type, "name": "T", **body}, format="json")


def test_create_manual_trigger(api, workflow):
    response = create(api, workflow)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["type"] == "MANUAL" and body["workflow"] == workflow.pk and body["is_active"] is True
    assert body["secret"] is None and body["webhook_url"] is None and body["api_key_prefix"] is None
    assert WorkflowTrigger.objects.get(pk=body["id"]).workflow == workflow


def test_webhook_secret_is_shown_once_and_stored_encrypted(api, workflow):
    body = create(api, workflow, "WEBHOOK").json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert body["webhook_url"] == f"http://testserver/api/webhooks/{body['id']}"
    stored = WorkflowTrigger.objects.get(pk=body["id"])
    assert stored.secret_encrypted and secret not in stored.secret_encrypted
    assert secret[6:] not in stored.secret_encrypted
    detail = api.get(f"/api/triggers/{body['id']}/")
    listing = api.get("/api/triggers/")
    for text in (detail.content.decode(), listing.content.decode()):
        assert secret not in text and "secret_encrypted" not in text
    assert "secret" not in detail.json()


def test_api_key_is_shown_once_and_stored_as_prefix_and_hash(api, workflow):
    body = create(api, workflow, "API", config={"rate_limit": "10/min"}).json()
    key = body["secret"]
    assert key.startswith("pp_") and body["api_key_prefix"] == key[:11]
    stored = WorkflowTrigger.objects.get(pk=body["id"])
    assert key not in str(stored.__dict__)
    assert len(stored.api_key_hash) == 64
    assert key not in api.get(f"/api/triggers/{body['id']}/").content.decode()


def test_workflow_of_another_user_is_refused(api, other_user):
    theirs = customer_workflow(other_user)
    response = create(api, theirs)
    assert response.status_code == 400
    assert "workflow" in response.json()["extra"]["errors"]
    assert not WorkflowTrigger.objects.exists()


@pytest.mark.parametrize(
    ("type", "config", "needle"),
    [
        ("MANUAL", {"rate_limit": "1/s"}, "do not take config"),
        ("WEBHOOK", {"input_mapping": {"customer": "payload.name |"}}, "input_mapping"),
        ("WEBHOOK", {"input_mapping": {"nope": "payload.name"}}, "not a variable"),
        ("WEBHOOK", {"input_mapping": {"customer": 3}}, "expression string"),
        ("WEBHOOK", {"input_mapping": ["customer"]}, "must be an object"),
        ("API", {"rate_limit": "lots"}, "N/period"),
        ("API", {"input_mapping": {}}, "do not take config"),
    ],
)
def test_config_is_validated_per_type(api, workflow, type, config, needle):
    response = create(api, workflow, type, config=config)
    assert response.status_code == 400, response.json()
    assert needle in response.json()["message"]


def test_valid_webhook_input_mapping_is_saved(api, workflow):
    config = {"input_mapping": {"customer": "payload.order.customer.name", "amount": "payload.order.total * 1"}}
    assert create(api, workflow, "WEBHOOK", config=config).json()["config"] == config


def test_list_and_filter_by_workflow(api, user, workflow, other_api, other_user):
    second = customer_workflow(user, name="Second")
    create(api, workflow)
    create(api, second, "WEBHOOK")
    create(other_api, customer_workflow(other_user))
    assert api.get("/api/triggers/").json()["count"] == 2
    filtered = api.get(f"/api/triggers/?workflow={second.pk}").json()
    assert [t["type"] for t in filtered["results"]] == ["WEBHOOK"]
    assert api.get("/api/triggers?workflow=abc").status_code == 400


def test_detail_carries_metrics_and_recent_invocations(api, manual):
    for name in ("Ada", "Bob"):
        trigger_fire(trigger=manual, inputs={"customer": name}, payload={})
    body = api.get(f"/api/triggers/{manual.pk}").json()
    metrics = body["metrics"]
    assert metrics["executions_total"] == 2 and metrics["by_status"]["PENDING"] == 2
    assert set(metrics["by_status"]) == {"PENDING", "RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED"}
    assert metrics["success_rate"] is None and metrics["last_execution"]["status"] == "PENDING"
    assert len(body["recent_invocations"]) == 2
    assert body["recent_invocations"][0]["status"] == "ACCEPTED"
    assert "payload" not in body["recent_invocations"][0]


def test_recent_invocations_are_the_last_ten(api, manual):
    for n in range(12):
        trigger_fire(trigger=manual, inputs={"customer": str(n)}, payload={"n": n})
    body = api.get(f"/api/triggers/{manual.pk}/").json()
    assert len(body["recent_invocations"]) == 10
    listing = api.get(f"/api/triggers/{manual.pk}/invocations/").json()
    assert listing["count"] == 12 and listing["results"][0]["payload"] == {"n": 11}


def test_update_name_active_and_config(api, workflow):
    trigger_id = create(api, workflow, "API").json()["id"]
    response = api.patch(f"/api/triggers/{trigger_id}/", {"is_active": False, "config": {"rate_limit": "5/s"}},
                         format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["is_active"] is False and response.json()["config"] == {"rate_limit": "5/s"}
    response = api.put(f"/api/triggers/{trigger_id}", {"name": "Renamed", "type": "API"}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "Renamed"
    assert response.json()["config"] == {"rate_limit": "5/s"}


def test_type_and_workflow_are_immutable(api, user, workflow):
    trigger_id = create(api, workflow).json()["id"]
    response = api.patch(f"/api/triggers/{trigger_id}/", {"type": "WEBHOOK"}, format="json")
    assert response.status_code == 400 and "type cannot change" in response.json()["message"]
    other = customer_workflow(user, name="Other")
    response = api.patch(f"/api/triggers/{trigger_id}/", {"workflow": other.pk}, format="json")
    assert response.status_code == 400
    assert WorkflowTrigger.objects.get(pk=trigger_id).type == "MANUAL"


def test_delete_keeps_executions(api, manual):
    execution = trigger_fire(trigger=manual, inputs={"customer": "Ada"}, payload={}).execution
    assert api.delete(f"/api/triggers/{manual.pk}/").status_code == 204
    assert not WorkflowTrigger.objects.exists() and not TriggerInvocation.objects.exists()
    execution.refresh_from_db()
    assert execution.trigger_id is None


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("get", "/", None), ("patch", "/", {"name": "x"}), ("put", "/", {"name": "x"}), ("delete", "/", None),
     ("post", "/rotate-secret", None), ("post", "/execute", {"input": {"customer": "x"}}),
     ("get", "/invocations/", None)],
)
def test_another_users_trigger_answers_404(other_api, webhook, method, suffix, body):
    trigger, _ = webhook
    response = getattr(other_api, method)(f"/api/triggers/{trigger.pk}{suffix}", body, format="json")
    assert response.status_code == 404, response.content
    assert response.json()["code"] in ("trigger_not_found", "not_found")
    assert WorkflowTrigger.objects.filter(pk=trigger.pk, name="Orders").exists()


@pytest.mark.parametrize("trigger_id", ["nope", "123", "00000000-0000-0000-0000-000000000000"])
def test_unknown_or_malformed_id_answers_404(api, trigger_id):
    assert api.get(f"/api/triggers/{trigger_id}/").status_code == 404


def test_anonymous_is_refused(anon):
    assert anon.get("/api/triggers/").status_code == 401


def test_rotate_secret_only_for_webhook_and_api(api, manual):
    response = api.post(f"/api/triggers/{manual.pk}/rotate-secret")
    assert response.status_code == 400 and response.json()["code"] == "secret_not_rotatable"


def test_rotate_webhook_secret_returns_a_new_one_once(api, webhook):
    trigger, old = webhook
    body = api.post(f"/api/triggers/{trigger.pk}/rotate-secret").json()
    assert body["secret"].startswith("whsec_") and body["secret"] != old
    assert "secret" not in api.get(f"/api/triggers/{trigger.pk}/").json()
