"""/readyz with a real Celery worker on the test broker: ready."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from promptpilot.common.readiness import worker_check_cache

pytestmark = pytest.mark.worker


@pytest.mark.django_db
def test_readyz_answers_200_when_database_broker_and_a_worker_answer(shared_worker, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "READYZ_WORKER_TIMEOUT_SECONDS": 5.0}  # generous under load
    worker_check_cache.clear()
    try:
        response = APIClient().get("/readyz")
    finally:
        worker_check_cache.clear()
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok" and body["failing"] == []
    assert body["checks"] == {"database": {"state": "ok"}, "broker": {"state": "ok"}, "worker": {"state": "ok"}}
