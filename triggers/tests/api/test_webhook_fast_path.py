"""Deliveries to a trigger the process already knows (triggers/services/webhook_fast_path.py):
one statement, the same rows as the full way, and any change to the trigger, its workflow
or its secrets is seen at once (the statement re-checks them; the full way takes over)."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.services.triggers import trigger_rotate_secret, trigger_update
from triggers.tests.helpers import body_bytes, deliver, signed_headers
from workflows.models import Workflow, WorkflowExecution, WorkflowVariable
from workflows.services.definitions import workflow_version_create

pytestmark = pytest.mark.django_db


def _send(client, trigger, secret, payload, **kwargs):
    body = body_bytes(payload)
    return deliver(client, trigger.pk, body, signed_headers(secret, body, **kwargs))


def _statements(client, trigger, secret, payload, **kwargs):
    with CaptureQueriesContext(connection) as queries:
        response = _send(client, trigger, secret, payload, **kwargs)
    # Savepoints are the test's transaction (under a server each statement commits alone).
    return response, len([q for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]])


def _record(execution: WorkflowExecution, invocation: TriggerInvocation) -> dict:
    """Every stored field, less those that differ between two deliveries by nature."""
    skip_execution = {"id", "created_at", "enqueued_at", "input", "metadata"}
    skip_invocation = {"id", "received_at", "execution", "delivery_id", "payload", "request_meta"}
    return {
        "execution": {f.attname: getattr(execution, f.attname) for f in execution._meta.concrete_fields
                      if f.name not in skip_execution},
        "invocation": {f.attname: getattr(invocation, f.attname) for f in invocation._meta.concrete_fields
                       if f.name not in skip_invocation},
        "metadata keys": sorted(execution.metadata),
        "meta keys": sorted(invocation.request_meta),
    }


def test_a_known_trigger_takes_one_statement_and_writes_what_the_full_way_writes(anon, webhook):
    trigger, secret = webhook
    first, full = _statements(anon, trigger, secret, {"customer": "Ada", "amount": 1}, msg_id="msg_a")
    second, fast = _statements(anon, trigger, secret, {"customer": "Bob", "amount": 2}, msg_id="msg_b")
    assert first.status_code == second.status_code == 202
    assert fast == 1 < full, (fast, full)

    records = []
    for response in (first, second):
        data = response.json()
        execution = WorkflowExecution.objects.get(pk=data["execution_id"])
        invocation = TriggerInvocation.objects.get(pk=data["invocation_id"])
        assert invocation.execution_id == execution.pk and data["status"] == "ACCEPTED"
        assert execution.metadata["invocation_id"] == str(invocation.pk)
        assert execution.metadata["delivery_id"] == invocation.delivery_id
        assert execution.metadata["payload"] == invocation.payload
        records.append(_record(execution, invocation))
    assert records[0] == records[1]
    assert WorkflowExecution.objects.get(pk=second.json()["execution_id"]).input == {"customer": "Bob", "amount": 2}


def test_a_repeated_id_is_still_a_duplicate(anon, webhook):
    trigger, secret = webhook
    first = _send(anon, trigger, secret, {"customer": "Ada"}, msg_id="msg_same")
    _send(anon, trigger, secret, {"customer": "Eve"})  # the trigger is now known
    again = _send(anon, trigger, secret, {"customer": "Ada"}, msg_id="msg_same")
    assert again.status_code == 200 and again.json()["status"] == "DUPLICATE"
    assert again.json()["execution_id"] == first.json()["execution_id"]
    assert WorkflowExecution.objects.count() == 2
    # A repeat says nothing about the trigger: the next delivery still takes one statement.
    later, statements = _statements(anon, trigger, secret, {"customer": "Fay"})
    assert later.status_code == 202 and statements == 1


def test_refusals_are_recorded_as_before(anon, webhook):
    trigger, secret = webhook
    _send(anon, trigger, secret, {"customer": "Ada"})
    body = body_bytes({"customer": "Ada"})
    bad = deliver(anon, trigger.pk, body, signed_headers("whsec_" + "A" * 44, body))
    assert bad.status_code == 401
    missing = _send(anon, trigger, secret, {"amount": 3})
    assert missing.status_code == 422
    statuses = sorted(TriggerInvocation.objects.values_list("status", flat=True))
    assert statuses == sorted([InvocationStatus.ACCEPTED, InvocationStatus.REJECTED, InvocationStatus.INVALID_INPUT])
    assert WorkflowExecution.objects.count() == 1


def test_a_disabled_trigger_or_workflow_is_refused_at_once(anon, webhook):
    trigger, secret = webhook
    _send(anon, trigger, secret, {"customer": "Ada"})
    trigger_update(trigger=trigger, data={"is_active": False})
    assert _send(anon, trigger, secret, {"customer": "Bob"}).status_code == 404
    trigger_update(trigger=trigger, data={"is_active": True})
    _send(anon, trigger, secret, {"customer": "Cy"})
    Workflow.objects.filter(pk=trigger.workflow_id).update(is_active=False)
    assert _send(anon, trigger, secret, {"customer": "Dee"}).status_code == 409
    assert WorkflowExecution.objects.count() == 2


def test_a_rotated_secret_is_seen_at_once(anon, webhook):
    trigger, old = webhook
    _send(anon, trigger, old, {"customer": "Ada"})
    trigger, new = trigger_rotate_secret(trigger=trigger)  # no grace: the old secret stops at once
    assert _send(anon, trigger, old, {"customer": "Bob"}).status_code == 401
    assert _send(anon, trigger, new, {"customer": "Bob"}).status_code == 202
    assert _send(anon, trigger, new, {"customer": "Cy"}).status_code == 202


def test_a_new_version_and_a_new_input_mapping_apply_to_the_next_delivery(anon, webhook):
    trigger, secret = webhook
    first = _send(anon, trigger, secret, {"customer": "Ada"})
    workflow = trigger.workflow
    WorkflowVariable.objects.create(workflow=workflow, name="city", type="STRING", required=False)
    version = workflow_version_create(workflow=workflow, note="adds city")
    trigger_update(trigger=trigger, data={"config": {"input_mapping": {"city": "payload.address.city"}}})

    second = _send(anon, trigger, secret, {"customer": "Bob", "address": {"city": "Oslo"}})
    assert second.status_code == 202
    run = WorkflowExecution.objects.get(pk=second.json()["execution_id"])
    assert run.version_id == version.pk != WorkflowExecution.objects.get(pk=first.json()["execution_id"]).version_id
    assert run.input == {"customer": "Bob", "amount": None, "city": "Oslo"}
