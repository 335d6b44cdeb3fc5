"""The trigger endpoints are in the OpenAPI document, generated without warnings."""
from __future__ import annotations

from django.core.management import call_command


def test_trigger_paths_are_in_the_schema_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    for path in ("/api/triggers/:", "/api/triggers/{id}/:", "/api/triggers/{id}/execute/:",
                 "/api/triggers/{id}/rotate-secret/:", "/api/triggers/{id}/invocations/:",
                 "/api/webhooks/{trigger_id}/:"):
        assert path in text, path
    assert "X-API-Key" in text and "webhook-signature" in text
