"""Helpers for trigger tests: workflows with variables, triggers made by the service,
and webhook deliveries signed by the standardwebhooks library (a client we did not write)."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from triggers.services.triggers import trigger_create
from workflows.tests.factories import make_workflow

GREETING = "Hello {{ input.customer }} from {{ trigger.payload.customer }} via {{ trigger.type }}"


def customer_workflow(owner, **fields: Any):
    """Variables ``customer`` (required STRING) and ``amount`` (optional NUMBER); one TRANSFORM step."""
    return make_workflow(
        owner,
        variables=[
            {"name": "customer", "type": "STRING", "required": True},
            {"name": "amount", "type": "NUMBER", "required": False},
        ],
        steps=[{"name": "greet", "type": "TRANSFORM", "config": {"template": GREETING}}],
        **fields,
    )


def create_trigger(workflow, type: str, *, name: str = "t", config: dict | None = None, is_active: bool = True):
    """``(trigger, secret)`` through the service, as the API would."""
    return trigger_create(owner=workflow.owner, workflow=workflow.pk, type=type, name=name,
                          config=config or {}, is_active=is_active)


def body_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def signed_headers(secret: str, body: bytes, *, msg_id: str | None = None,
                   timestamp: datetime | None = None) -> dict[str, str]:
    """Django test-client headers for a delivery signed with ``standardwebhooks``."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = timestamp or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body.decode())
    return {
        "HTTP_WEBHOOK_ID": msg_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(timestamp.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": signature,
    }


def deliver(client, trigger_id, body: bytes, headers: dict[str, str] | None = None, **extra):
    return client.post(f"/api/webhooks/{trigger_id}", data=body, content_type="application/json",
                       **(headers or {}), **extra)
