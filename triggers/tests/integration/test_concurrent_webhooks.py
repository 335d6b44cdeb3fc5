"""Two deliveries of the same webhook-id at the same time make ONE execution (real
PostgreSQL transactions, one connection per thread; the unique constraint decides)."""
from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client

import triggers.services.firing as firing
from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import body_bytes, create_trigger, customer_workflow, deliver, signed_headers
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)


def deliver_concurrently(trigger, body: bytes, headers: dict, copies: int = 2) -> list:
    start = threading.Barrier(copies, timeout=10)
    responses: list = [None] * copies
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            start.wait()
            responses[index] = deliver(Client(), trigger.pk, body, headers)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    return responses


@pytest.fixture
def hook(django_user_model):
    owner = django_user_model.objects.create_user(username="racer", password="pw-racer-123")
    return create_trigger(customer_workflow(owner), "WEBHOOK")


def assert_one_run(responses) -> None:
    assert sorted(r.status_code for r in responses) == [200, 202], [r.content for r in responses]
    assert len({r.json()["execution_id"] for r in responses}) == 1
    assert WorkflowExecution.objects.count() == 1
    assert TriggerInvocation.objects.filter(status=InvocationStatus.ACCEPTED).count() == 1
    assert TriggerInvocation.objects.filter(status=InvocationStatus.DUPLICATE).count() == 1


def test_two_deliveries_racing_to_write_make_one_execution(hook, monkeypatch):
    """Both requests are held until both are about to write the run, so both INSERT: the
    second waits on the unique index until the first commits, then loses and answers
    with the first run."""
    trigger, secret = hook
    real_start = firing.execution_start
    both_ready = threading.Barrier(2, timeout=10)

    def start_when_both_are_ready(**kwargs):
        both_ready.wait()  # breaks (and the test fails) unless both requests get here
        return real_start(**kwargs)

    monkeypatch.setattr(firing, "execution_start", start_when_both_are_ready)
    body = body_bytes({"customer": "Ada"})
    responses = deliver_concurrently(trigger, body, signed_headers(secret, body, msg_id="msg_race"))
    assert_one_run(responses)


def test_two_simultaneous_deliveries_of_the_same_id_make_one_execution(hook):
    trigger, secret = hook
    body = body_bytes({"customer": "Bob"})
    responses = deliver_concurrently(trigger, body, signed_headers(secret, body, msg_id="msg_same"))
    assert_one_run(responses)
