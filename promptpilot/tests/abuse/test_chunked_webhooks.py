"""Webhooks sent with ``Transfer-Encoding: chunked`` (no Content-Length), through a real
gunicorn process as in production: the body is read, verified and size-limited (413)."""
from __future__ import annotations

import http.client
import json
import socket
import sys
from collections.abc import Iterator

import pytest
from django.conf import settings

from triggers.models import InvocationStatus, TriggerInvocation
from triggers.tests.helpers import create_trigger, customer_workflow, signed_headers
from workflows.models import WorkflowExecution
from workflows.tests.support.processes import ServiceProcess

pytestmark = pytest.mark.django_db(transaction=True)  # gunicorn reads what the test committed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn(service_env, tmp_path_factory) -> Iterator[str]:
    port = _free_port()
    env = {**service_env, "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    process = ServiceProcess(
        "gunicorn", [sys.executable, "-m", "gunicorn", "promptpilot.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"],
        env, tmp_path_factory.mktemp("gunicorn"),
    )
    process.wait_for_log("Booting worker", timeout=60)
    yield f"127.0.0.1:{port}"
    process.stop()


def _post_chunked(address: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(address, timeout=60)
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    connection.request("POST", path, body=chunks, headers={"Content-Type": "application/json", **headers},
                       encode_chunked=True)
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    return status, json.loads(data)


def _wire_headers(secret: str, body: bytes) -> dict[str, str]:
    return {key[len("HTTP_"):].replace("_", "-").lower(): value for key, value in signed_headers(secret, body).items()}


def test_a_chunked_signed_webhook_is_read_and_accepted(gunicorn, user):
    trigger, secret = create_trigger(customer_workflow(user), "WEBHOOK", name="chunked")
    body = json.dumps({"customer": "Ada", "pad": "x" * 200_000}).encode()  # several chunks
    status, data = _post_chunked(gunicorn, f"/api/webhooks/{trigger.pk}", body, _wire_headers(secret, body))
    assert status == 202, data
    execution = WorkflowExecution.objects.get(pk=data["execution_id"])
    assert execution.input["customer"] == "Ada"
    assert TriggerInvocation.objects.get(pk=data["invocation_id"]).verified


def test_a_chunked_webhook_over_the_size_limit_is_413_and_recorded(gunicorn, user):
    trigger, secret = create_trigger(customer_workflow(user), "WEBHOOK", name="big")
    body = json.dumps({"customer": "Ada", "pad": "x" * (2 * 1024 * 1024)}).encode()
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    status, data = _post_chunked(gunicorn, f"/api/webhooks/{trigger.pk}", body, _wire_headers(secret, body))
    assert status == 413, data
    invocation = TriggerInvocation.objects.get(trigger=trigger)
    assert invocation.status == InvocationStatus.REJECTED and not invocation.verified
    assert WorkflowExecution.objects.filter(trigger=trigger).count() == 0
