"""/readyz with a real Celery worker on the test broker: ready."""
from __future__ import annotations

import logging

import pytest
from rest_framework.test import APIClient

from promptpilot.common.readiness import readyz_log, worker_check_cache

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


@pytest.mark.django_db
def test_readyz_logs_its_recovery_once_when_the_broker_comes_back(shared_worker, settings, monkeypatch, caplog):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "READYZ_WORKER_TIMEOUT_SECONDS": 5.0}
    caplog.set_level(logging.INFO)
    worker_check_cache.clear()
    readyz_log.clear()
    try:
        monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # the broker "down"
        assert APIClient().get("/readyz").status_code == 503
        monkeypatch.undo()
        assert [APIClient().get("/readyz").status_code for _ in range(3)] == [200] * 3
    finally:
        worker_check_cache.clear()
        readyz_log.clear()
    events = [(r.levelname, r.getMessage(), r.previously_failing if r.levelname == "INFO" else r.failing)
              for r in caplog.records if r.name in ("promptpilot.common.readiness", "django.request")]
    assert events == [("WARNING", "readiness.failing", ["broker", "worker"]),
                      ("INFO", "readiness.recovered", ["broker", "worker"])]
