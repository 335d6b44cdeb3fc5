"""Webhook deliveries by outcome: each recorded delivery counts once in
``promptpilot_trigger_invocations_total`` and logs its ``trigger.*`` event with the ids."""
from __future__ import annotations

import logging

import pytest

from triggers.tests.helpers import body_bytes, deliver, signed_headers
from workflows.tests.support.metrics import moved, scrape

pytestmark = pytest.mark.django_db(transaction=True)  # the fast path's guarded INSERT, as in production

ORDER = {"customer": "Ada"}


def test_accepted_duplicate_and_rejected_deliveries_are_counted_by_outcome(anon, client, admin_user, webhook,
                                                                          caplog):
    trigger, secret = webhook
    client.force_login(admin_user)
    before = scrape(client)
    body = body_bytes(ORDER)
    caplog.set_level(logging.INFO, logger="triggers")

    first = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_a"))
    again = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_a"))
    # The trigger is remembered now: this one takes the fast path, counted all the same.
    other = deliver(anon, trigger.pk, body, signed_headers(secret, body, msg_id="msg_b"))
    forged = deliver(anon, trigger.pk, body, signed_headers("whsec_" + "A" * 44, body))

    assert [r.status_code for r in (first, again, other, forged)] == [202, 200, 202, 401]
    after = scrape(client)
    assert moved(before, after, "promptpilot_trigger_invocations_total", trigger_type="WEBHOOK",
                 outcome="ACCEPTED") == 2
    assert moved(before, after, "promptpilot_trigger_invocations_total", trigger_type="WEBHOOK",
                 outcome="DUPLICATE") == 1
    assert moved(before, after, "promptpilot_trigger_invocations_total", trigger_type="WEBHOOK",
                 outcome="REJECTED") == 1
    assert moved(before, after, "promptpilot_executions_created_total", trigger_type="WEBHOOK") == 2

    events = [(r.getMessage(), getattr(r, "trigger_id", None), getattr(r, "execution_id", None))
              for r in caplog.records if r.getMessage().startswith("trigger.")]
    assert events == [
        ("trigger.fired", str(trigger.pk), first.json()["execution_id"]),
        ("trigger.duplicate", str(trigger.pk), first.json()["execution_id"]),
        ("trigger.fired", str(trigger.pk), other.json()["execution_id"]),
        ("trigger.rejected", str(trigger.pk), None),
    ]
    created = [r for r in caplog.records if r.getMessage() == "execution.created"]
    assert [r.trigger_id for r in created] == [str(trigger.pk)] * 2, "the run's creation names its trigger"
