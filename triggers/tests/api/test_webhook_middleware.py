"""Webhook deliveries go around the page middleware (triggers/middleware.py) but keep
what every response of the site has: the host check and the security headers."""
from __future__ import annotations

import pytest

from triggers.tests.helpers import body_bytes, deliver, signed_headers
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db


def test_a_delivery_keeps_the_security_headers(anon, webhook):
    trigger, secret = webhook
    body = body_bytes({"customer": "Ada"})
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 202
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in response and "csrftoken" not in response.cookies


def test_a_delivery_to_an_unknown_host_is_refused(anon, webhook):
    trigger, secret = webhook
    body = body_bytes({"customer": "Ada"})
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body), HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("path", ["/api/webhooks/", "/api/webhooks//", "/api/webhooks/a/b"])
def test_paths_that_are_not_a_delivery_answer_a_json_404(anon, path):
    response = anon.post(path, data=b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_other_methods_answer_as_the_api_does(anon, webhook):
    trigger, _ = webhook
    response = anon.get(f"/api/webhooks/{trigger.pk}")
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")
