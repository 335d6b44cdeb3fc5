"""A webhook delivery accepted while the broker is unreachable: its invocation and PENDING
run are committed before the 202, and the run starts once a worker is there (the reaper
sends the message that could not be sent). Real processes: PostgreSQL, Redis, worker, beat."""
from __future__ import annotations

import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import GREETING, body_bytes, create_trigger, customer_workflow, deliver, signed_headers
from workflows.models import WorkflowExecution
from workflows.tests.durability.helpers import wait_finished
from workflows.tests.support.processes import ROOT

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_delivery_accepted_while_the_broker_is_down_runs_once_it_is_back(user, workers, service_env):
    trigger, secret = create_trigger(customer_workflow(user), "WEBHOOK")
    body = body_bytes({"customer": "Ada"})
    headers = signed_headers(secret, body, msg_id="msg_outage")
    script = (
        "from django.test import Client;"
        f"r = Client(HTTP_HOST='localhost').post('/api/webhooks/{trigger.pk}', data={body!r}, content_type='application/json', "
        f"**{headers!r});"
        "print('ANSWER', r.status_code, r.json().get('execution_id'), r.content)"
    )
    env = {**service_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}  # nothing listens there
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status, execution_id = done.stdout.split("ANSWER", 1)[1].split()[:2]
    assert status == "202", done.stdout
    assert WorkflowExecution.objects.get(pk=execution_id).status == "PENDING", "committed before the 202"

    workers("after-outage")
    finished = wait_finished(execution_id, timeout=60)
    assert finished.status == "COMPLETED", finished.error
    assert finished.output == GREETING.replace("{{ input.customer }}", "Ada").replace(
        "{{ trigger.payload.customer }}", "Ada").replace("{{ trigger.type }}", "WEBHOOK")

    # The sender retries after the outage: the same run, nothing new.
    again = deliver(APIClient(), trigger.pk, body, headers)
    assert again.status_code == 200 and again.json()["execution_id"] == execution_id
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 1
    assert TriggerInvocation.objects.filter(trigger=trigger, status=InvocationStatus.ACCEPTED).count() == 1
