"""/metrics: Prometheus text, exact across processes because it is read from the database."""
from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from workflows.models import WorkflowExecution
from workflows.services.definitions import workflow_version_create
from workflows.tests.factories import make_workflow
from workflows.tests.support.metrics import parse

pytestmark = pytest.mark.django_db


def _runs(user, statuses):
    workflow = make_workflow(user, steps=[{"name": "t", "type": "TRANSFORM", "config": {"template": "x"}}])
    version = workflow_version_create(workflow=workflow)
    for status in statuses:
        WorkflowExecution.objects.create(workflow=workflow, version=version, status=status)


def test_staff_reads_execution_counts_by_status_and_trigger_type(client, admin_user, user):
    _runs(user, ["COMPLETED", "COMPLETED", "FAILED", "PENDING"])
    client.force_login(admin_user)
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = parse(response.content.decode())

    def executions(status, trigger_type="MANUAL"):
        return samples[("promptpilot_executions", (("status", status), ("trigger_type", trigger_type)))]

    assert executions("COMPLETED") == 2
    assert executions("FAILED") == 1
    assert executions("RUNNING") == 0
    assert executions("COMPLETED", "WEBHOOK") == 0
    assert samples[("promptpilot_queue_depth", (("kind", "execution"),))] == 1  # the PENDING run
    assert samples[("promptpilot_executions_waiting", ())] == 0
    assert samples[("promptpilot_oldest_pending_execution_age_seconds", ())] >= 0


def test_anonymous_and_non_staff_get_401(client, user):
    assert client.get("/metrics").status_code == 401
    client.force_login(user)
    assert client.get("/metrics/").status_code == 401


@override_settings(PROMPTPILOT={**settings.PROMPTPILOT, "METRICS_TOKEN": "s3cret"})
def test_scraper_with_the_bearer_token_reads_metrics(client):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200
    assert "promptpilot_executions" in response.content.decode()
