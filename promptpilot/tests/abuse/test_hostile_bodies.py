"""Oversize, deeply nested and invalid-UTF-8 JSON bodies get a 4xx with a JSON message,
never a 500, on every endpoint that reads a body."""
from __future__ import annotations

import time
import uuid

import pytest

from triggers.services.webhooks import webhook_signature
from triggers.tests.helpers import create_trigger
from workflows.models import Prompt

pytestmark = pytest.mark.django_db

BODIES = {
    "oversize": b'{"input": {"customer": "' + b"x" * (1024 * 1024 + 10) + b'"}}',
    "deeply nested": b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deeply nested objects": b'{"input": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
    "invalid UTF-8": b'{"input": {"customer": "\xff\xfe\xc3\x28"}}',
    "truncated": b'{"input": {"customer": "Ada"',
    "not JSON": b"\x00\x01\x02binary",
}


@pytest.fixture
def targets(user, workflow) -> dict[str, tuple[str, dict]]:
    """Every endpoint that parses a JSON body, with the headers it needs."""
    manual = create_trigger(workflow, "MANUAL", name="m")[0]
    prompt = Prompt.objects.create(owner=user, name="p", template="t")
    return {
        "auth token": ("post", "/api/auth/token/"),
        "prompt create": ("post", "/api/prompts/"),
        "prompt update": ("put", f"/api/prompts/{prompt.pk}/"),
        "workflow create": ("post", "/api/workflows/"),
        "workflow update": ("patch", f"/api/workflows/{workflow.pk}/"),
        "execute": ("post", f"/api/workflows/{workflow.pk}/execute"),
        "preview": ("post", f"/api/workflows/{workflow.pk}/preview"),
        "trigger create": ("post", "/api/triggers/"),
        "trigger update": ("patch", f"/api/triggers/{manual.pk}/"),
        "trigger execute": ("post", f"/api/triggers/{manual.pk}/execute"),
        "rotate secret": ("post", f"/api/triggers/{manual.pk}/rotate-secret"),
        "event emit": ("post", "/api/events/"),
    }


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_hostile_bodies_get_a_4xx_everywhere(api, targets, body):
    for name, (verb, path) in targets.items():
        response = getattr(api, verb)(path, data=body, content_type="application/json")
        assert 400 <= response.status_code < 500, (name, response.status_code, response.content[:300])
        assert response.json()["message"], name


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_hostile_signed_webhook_bodies_get_a_4xx_and_are_recorded(anon, webhook, body):
    from triggers.models import TriggerInvocation

    trigger, secret = webhook
    # Signed over the raw bytes (the standardwebhooks client only signs text).
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    headers = {"HTTP_WEBHOOK_ID": msg_id, "HTTP_WEBHOOK_TIMESTAMP": timestamp,
               "HTTP_WEBHOOK_SIGNATURE": webhook_signature(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)}
    response = anon.post(f"/api/webhooks/{trigger.pk}", data=body, content_type="application/json", **headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert TriggerInvocation.objects.filter(trigger=trigger).count() == 1
