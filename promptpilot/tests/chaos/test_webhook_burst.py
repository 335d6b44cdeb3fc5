"""Chaos: a burst of signed webhook deliveries, a tenth of them repeated (a sender's
retries, some racing the first delivery, some later), through Django's whole request
stack in eight threads at once, with a real worker running what they start."""
from __future__ import annotations

import queue
import random
import threading
import uuid
from collections import Counter

import pytest
from django.db import connection
from rest_framework.test import APIClient

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import body_bytes, create_trigger, customer_workflow, deliver, signed_headers
from workflows.models import WorkflowExecution

from .helpers import db_wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

DELIVERIES = 500
REPEATS = DELIVERIES // 10
SENDERS = 8


def _deliveries(unique: int, repeats: int) -> list[str]:
    """Delivery ids in sending order: each repeat right behind its first (two senders race
    with the same id) for half of them, much later for the others."""
    rng = random.Random(11)
    ids = [f"msg_{uuid.uuid4().hex}" for _ in range(unique)]
    order = list(ids)
    repeated = rng.sample(ids, repeats)
    for msg_id in repeated[: repeats // 2]:
        order.insert(order.index(msg_id) + 1, msg_id)
    order.extend(repeated[repeats // 2:])
    return order


def test_a_burst_of_500_signed_deliveries_with_ten_percent_repeats_starts_exactly_one_run_per_id(
        user, workers):
    workflow = customer_workflow(user)
    trigger, secret = create_trigger(workflow, "WEBHOOK", name="Burst")
    workers("burst")
    order = _deliveries(DELIVERIES - REPEATS, REPEATS)
    work: queue.Queue[tuple[int, str]] = queue.Queue()
    for number, msg_id in enumerate(order):
        work.put((number, msg_id))
    answers: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def send() -> None:
        client = APIClient()
        try:
            while True:
                try:
                    number, msg_id = work.get_nowait()
                except queue.Empty:
                    return
                body = body_bytes({"customer": f"C{number}", "amount": number})
                response = deliver(client, trigger.pk, body, signed_headers(secret, body, msg_id=msg_id))
                with lock:
                    answers.append((msg_id, response.status_code, response.json()))
        finally:
            connection.close()

    senders = [threading.Thread(target=send) for _ in range(SENDERS)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(180)

    assert len(answers) == DELIVERIES
    assert Counter(code for _, code, _ in answers) == {202: DELIVERIES - REPEATS, 200: REPEATS}
    first_run = {msg_id: body["execution_id"] for msg_id, code, body in answers if code == 202}
    assert len(first_run) == DELIVERIES - REPEATS, "one accepted delivery per id"
    for msg_id, code, body in answers:
        if code == 200:
            assert body["status"] == "DUPLICATE" and body["execution_id"] == first_run[msg_id]

    runs = WorkflowExecution.objects.filter(trigger=trigger)
    assert runs.count() == DELIVERIES - REPEATS
    invocations = TriggerInvocation.objects.filter(trigger=trigger)
    assert Counter(invocations.values_list("status", flat=True)) == {
        InvocationStatus.ACCEPTED: DELIVERIES - REPEATS, InvocationStatus.DUPLICATE: REPEATS}, \
        "every delivery is recorded"
    db_wait_for(lambda: runs.filter(status="COMPLETED").count() == DELIVERIES - REPEATS, 120,
                "every accepted delivery's run to complete")
    assert runs.count() == DELIVERIES - REPEATS
