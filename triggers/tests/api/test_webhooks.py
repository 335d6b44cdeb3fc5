"""POST /api/webhooks/{trigger_id}: Standard Webhooks deliveries, every one recorded."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import body_bytes, create_trigger, deliver, signed_headers
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db

ORDER = {"customer": "Ada", "amount": 12.5, "order": {"id": "o-1", "lines": [1, 2]}}


def assert_nothing_started():
    assert WorkflowExecution.objects.count() == 0


def test_signed_delivery_starts_a_run_with_body_keys_as_inputs(anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_1"))
    assert response.status_code == 202, response.json()
    data = response.json()
    assert set(data) == {"execution_id", "invocation_id", "status"} and data["status"] == "ACCEPTED"
    execution = WorkflowExecution.objects.get(pk=data["execution_id"])
    assert execution.trigger_type == "WEBHOOK" and execution.trigger_id == trigger.pk
    assert execution.input == {"customer": "Ada", "amount": 12.5}, "keys that are not variables are left out"
    assert execution.metadata["payload"] == ORDER
    invocation = TriggerInvocation.objects.get(pk=data["invocation_id"])
    assert invocation.verified and invocation.verification_error == ""
    assert invocation.delivery_id == "msg_1" and invocation.payload == ORDER
    assert invocation.execution_id == execution.pk and invocation.status == InvocationStatus.ACCEPTED
    assert invocation.request_meta["content_length"] == len(body)


def test_path_with_trailing_slash_works(anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    response = anon.post(f"/api/webhooks/{trigger.pk}/", data=body, content_type="application/json",
                         **signed_headers(secret, body))
    assert response.status_code == 202


def test_input_mapping_fills_variables_from_the_payload(anon, workflow):
    trigger, secret = create_trigger(workflow, "WEBHOOK", config={
        "input_mapping": {"customer": "payload.data.name | upper", "amount": "payload.data.total"}})
    body = body_bytes({"data": {"name": "ada", "total": 3}, "customer": "ignored: the mapping wins"})
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 202, response.json()
    assert WorkflowExecution.objects.get().input == {"customer": "ADA", "amount": 3}


def test_input_mapping_that_fails_on_the_payload_answers_422(anon, workflow):
    trigger, secret = create_trigger(workflow, "WEBHOOK", config={"input_mapping": {"customer": "payload.data.name"}})
    body = body_bytes({"other": 1})
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 422
    assert "input_mapping" in response.json()["message"]
    assert TriggerInvocation.objects.get().status == InvocationStatus.INVALID_INPUT
    assert_nothing_started()


def test_inputs_that_fail_validation_are_recorded_and_answer_422(anon, webhook):
    trigger, secret = webhook
    body = body_bytes({"amount": "twelve"})
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_bad"))
    assert response.status_code == 422, response.json()
    errors = response.json()["extra"]["errors"]
    assert set(errors) == {"customer", "amount"}
    invocation = TriggerInvocation.objects.get(pk=response.json()["extra"]["invocation_id"])
    assert invocation.status == InvocationStatus.INVALID_INPUT and invocation.verified
    assert "customer" in invocation.error and invocation.payload == {"amount": "twelve"}
    assert_nothing_started()


def test_tampered_body_answers_401_and_is_recorded_unverified(anon, webhook):
    trigger, secret = webhook
    headers = signed_headers(secret, body_bytes(ORDER), msg_id="msg_t")
    response = deliver(anon, trigger.pk, body_bytes({**ORDER, "amount": 1_000_000}), headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    invocation = TriggerInvocation.objects.get()
    assert not invocation.verified and "No signature" in invocation.verification_error
    assert invocation.status == InvocationStatus.REJECTED and invocation.execution is None
    assert invocation.delivery_id is None and invocation.payload is None
    assert invocation.request_meta["webhook_id"] == "msg_t"
    assert_nothing_started()


def test_re_serialised_body_answers_401(anon, webhook):
    trigger, secret = webhook
    sent = b'{"customer":"Ada","amount":12.5}'
    response = deliver(anon, trigger.pk, body_bytes({"customer": "Ada", "amount": 12.5}), signed_headers(secret, sent))
    assert response.status_code == 401
    assert_nothing_started()


def test_wrong_secret_answers_401(anon, webhook, workflow):
    trigger, _ = webhook
    _, other_secret = create_trigger(workflow, "WEBHOOK")
    body = body_bytes(ORDER)
    assert deliver(anon, trigger.pk, body, signed_headers(other_secret, body)).status_code == 401
    assert_nothing_started()


@pytest.mark.parametrize("seconds", [-301, 301, -3600])
def test_stale_or_future_timestamp_answers_401(anon, webhook, seconds):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    when = datetime.now(tz=UTC) + timedelta(seconds=seconds)
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body, timestamp=when))
    assert response.status_code == 401
    assert "webhook-timestamp" in TriggerInvocation.objects.get().verification_error
    assert_nothing_started()


@pytest.mark.parametrize("missing", ["HTTP_WEBHOOK_ID", "HTTP_WEBHOOK_TIMESTAMP", "HTTP_WEBHOOK_SIGNATURE", "all"])
def test_missing_headers_answer_401(anon, webhook, missing):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    headers = signed_headers(secret, body)
    headers = {} if missing == "all" else {k: v for k, v in headers.items() if k != missing}
    response = deliver(anon, trigger.pk, body, headers)
    assert response.status_code == 401
    assert "Missing header" in response.json()["message"]
    assert TriggerInvocation.objects.get().verified is False
    assert_nothing_started()


def test_id_with_a_dot_and_non_integer_timestamp_answer_401(anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg.1")).status_code == 401
    headers = signed_headers(secret, body)
    headers["HTTP_WEBHOOK_TIMESTAMP"] += ".0"
    assert deliver(anon, trigger.pk, body, headers).status_code == 401
    assert_nothing_started()


def test_replayed_id_starts_nothing_and_answers_the_first_run(anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    first = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_r"))
    again = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_r"))
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert again.json()["invocation_id"] == first.json()["invocation_id"]
    assert again.json()["status"] == "DUPLICATE"
    assert WorkflowExecution.objects.count() == 1
    assert TriggerInvocation.objects.filter(status=InvocationStatus.DUPLICATE).count() == 1


def test_same_id_on_another_trigger_is_a_different_delivery(anon, webhook, workflow):
    trigger, secret = webhook
    other, other_secret = create_trigger(workflow, "WEBHOOK")
    body = body_bytes(ORDER)
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_s")).status_code == 202
    assert deliver(anon, other.pk, body, signed_headers(other_secret, body, msg_id="msg_s")).status_code == 202
    assert WorkflowExecution.objects.count() == 2


def test_forged_delivery_cannot_burn_a_real_delivery_id(anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    forged = signed_headers("whsec_" + "A" * 44, body, msg_id="msg_f")
    assert deliver(anon, trigger.pk, body, forged).status_code == 401
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_f")).status_code == 202


def test_oversize_body_answers_413_and_is_recorded(anon, webhook):
    trigger, secret = webhook
    body = body_bytes({"customer": "Ada", "blob": "x" * (1024 * 1024)})
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    invocation = TriggerInvocation.objects.get()
    assert invocation.status == InvocationStatus.REJECTED and not invocation.verified
    assert invocation.request_meta["content_length"] == len(body)
    assert_nothing_started()


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"", b'{"a": NaN}', b'{"a": 1e999}',
                                  b'{"a": "\\u0000"}', b"\xff\xfe"])
def test_body_that_is_not_a_json_object_answers_400(anon, webhook, body):
    trigger, secret = webhook
    headers = signed_headers(secret, body) if body != b"\xff\xfe" else {
        **signed_headers(secret, b"x"), "HTTP_WEBHOOK_SIGNATURE": "v1,"}
    response = deliver(anon, trigger.pk, body, headers)
    if body == b"\xff\xfe":  # not UTF-8: cannot be signed by the library; the signature fails first
        assert response.status_code == 401
    else:
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid_body"
        invocation = TriggerInvocation.objects.get()
        assert invocation.verified and invocation.status == InvocationStatus.REJECTED and invocation.error
    assert_nothing_started()


def test_unknown_malformed_and_inactive_triggers_answer_404(anon, webhook, workflow, manual):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    for target in ("00000000-0000-0000-0000-000000000000", "nope", manual.pk):
        response = deliver(anon, target, body, signed_headers(secret, body))
        assert response.status_code == 404
        assert response.json()["code"] == "trigger_not_found"
    trigger.is_active = False
    trigger.save()
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body)).status_code == 404
    assert not TriggerInvocation.objects.exists()
    assert_nothing_started()


def test_rotated_secret_old_one_rejected_new_one_accepted(api, anon, webhook):
    trigger, old = webhook
    new = api.post(f"/api/triggers/{trigger.pk}/rotate-secret").json()["secret"]
    body = body_bytes(ORDER)
    assert deliver(anon, trigger.pk, body, signed_headers(old, body)).status_code == 401
    assert deliver(anon, trigger.pk, body, signed_headers(new, body)).status_code == 202


def test_signature_header_with_old_and_new_secret_is_accepted(anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    headers = signed_headers(secret, body)
    stale = signed_headers("whsec_" + "B" * 44, body, msg_id=headers["HTTP_WEBHOOK_ID"])
    headers["HTTP_WEBHOOK_SIGNATURE"] = f"{stale['HTTP_WEBHOOK_SIGNATURE']} {headers['HTTP_WEBHOOK_SIGNATURE']}"
    assert deliver(anon, trigger.pk, body, headers).status_code == 202


def test_session_cookie_is_not_needed_nor_csrf_checked(webhook, client, user):
    client.force_login(user)  # a logged-in browser session must not turn on CSRF checks
    client.handler.enforce_csrf_checks = True
    trigger, secret = webhook
    body = body_bytes(ORDER)
    assert deliver(client, trigger.pk, body, signed_headers(secret, body)).status_code == 202


def test_inactive_workflow_answers_409_and_is_recorded(anon, webhook, workflow):
    trigger, secret = webhook
    workflow.is_active = False
    workflow.save()
    body = body_bytes(ORDER)
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 409
    assert TriggerInvocation.objects.get().status == InvocationStatus.REJECTED
    assert_nothing_started()


def test_delivery_updates_last_triggered_at_and_metrics(api, anon, webhook):
    trigger, secret = webhook
    body = body_bytes(ORDER)
    deliver(anon, trigger.pk, body, signed_headers(secret, body))
    detail = api.get(f"/api/triggers/{trigger.pk}/").json()
    assert detail["last_triggered_at"] is not None
    assert detail["metrics"]["executions_total"] == 1
    assert detail["recent_invocations"][0]["delivery_id"]


def test_rotation_grace_period_keeps_the_previous_secret_valid_until_it_ends(api, anon, webhook):
    trigger, old = webhook
    response = api.post(f"/api/triggers/{trigger.pk}/rotate-secret", {"grace_seconds": 3600}, format="json")
    assert response.status_code == 200, response.json()
    new = response.json()["secret"]
    assert response.json()["previous_secret_expires_at"] is not None
    body = body_bytes(ORDER)
    assert deliver(anon, trigger.pk, body, signed_headers(old, body)).status_code == 202
    assert deliver(anon, trigger.pk, body, signed_headers(new, body)).status_code == 202

    trigger.refresh_from_db()
    trigger.previous_secret_expires_at = datetime.now(tz=UTC) - timedelta(seconds=1)
    trigger.save()
    assert deliver(anon, trigger.pk, body, signed_headers(old, body)).status_code == 401
    assert api.get(f"/api/triggers/{trigger.pk}/").json()["previous_secret_expires_at"] is None


def test_rotation_without_grace_forgets_the_previous_secret(api, anon, webhook):
    trigger, old = webhook
    api.post(f"/api/triggers/{trigger.pk}/rotate-secret", {"grace_seconds": 3600}, format="json")
    newest = api.post(f"/api/triggers/{trigger.pk}/rotate-secret").json()["secret"]
    body = body_bytes(ORDER)
    assert deliver(anon, trigger.pk, body, signed_headers(old, body)).status_code == 401
    assert deliver(anon, trigger.pk, body, signed_headers(newest, body)).status_code == 202


@pytest.mark.parametrize("grace", [-1, 7 * 24 * 3600 + 1, "soon"])
def test_rotation_grace_is_bounded(api, webhook, grace):
    trigger, _ = webhook
    response = api.post(f"/api/triggers/{trigger.pk}/rotate-secret", {"grace_seconds": grace}, format="json")
    assert response.status_code == 400


def test_unreadable_stored_secret_answers_401_and_is_recorded(anon, webhook, settings):
    trigger, secret = webhook
    settings.PROMPTPILOT_SECRETS_KEYS = ["a different key"]
    body = body_bytes(ORDER)
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 401
    assert "PROMPTPILOT_SECRETS_KEY" in TriggerInvocation.objects.get().verification_error
    assert_nothing_started()


def test_repeat_of_an_accepted_delivery_answers_the_first_run_even_with_a_broken_body(anon, webhook):
    """Repeats are found by the unique delivery id, not looked up first: one that would be
    refused (here: not JSON) must still be answered as the repeat it is."""
    trigger, secret = webhook
    body = body_bytes(ORDER)
    first = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_b"))
    broken = b"not json"
    again = deliver(anon, trigger.pk, broken, signed_headers(secret, broken, msg_id="msg_b"))
    assert first.status_code == 202 and again.status_code == 200, again.content
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert WorkflowExecution.objects.count() == 1


def test_a_new_version_of_the_workflow_is_used_by_the_next_delivery(anon, webhook, workflow):
    """Each process reads a version's variables once: a definition change (a new version)
    must still reach the very next delivery."""
    from workflows.models import WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    trigger, secret = webhook
    body = body_bytes({"customer": "Ada", "region": "eu"})
    before = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert before.status_code == 202
    assert WorkflowExecution.objects.get(pk=before.json()["execution_id"]).input == {"customer": "Ada", "amount": None}
    WorkflowVariable.objects.create(workflow=workflow, name="region", type="STRING", required=True)
    version = workflow_version_create(workflow=workflow, note="region added")
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 202, response.json()
    execution = WorkflowExecution.objects.get(pk=response.json()["execution_id"])
    assert execution.version_id == version.pk
    assert execution.input == {"customer": "Ada", "amount": None, "region": "eu"}
    body = body_bytes({"customer": "Bob"})
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body)).status_code == 422, "region is required now"


def test_a_delivery_reads_the_trigger_once(anon, webhook, django_assert_max_num_queries):
    """The receiver loads only some of the trigger's fields; one it forgot would be read
    lazily, one query per use. Inside the test's transaction an accepted delivery is: the
    trigger, the version's variables (first time in this process), a savepoint around the
    one INSERT statement, and last_triggered_at."""
    trigger, secret = webhook
    body = body_bytes(ORDER)
    with django_assert_max_num_queries(6):
        response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 202
