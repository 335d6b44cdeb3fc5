"""/readyz without a worker: each part that does not answer is named (real Redis, PostgreSQL).

No worker runs in this module (the worker case is test_readiness_with_worker.py): the
module-scoped worker fixtures of other modules are gone before it starts.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from promptpilot.celery import app as celery_app
from promptpilot.common.readiness import healthz_log, readyz_log, worker_check_cache


@pytest.fixture(autouse=True)
def fresh_worker_check(settings, broker_url):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "READYZ_WORKER_TIMEOUT_SECONDS": 0.5,
                            "READYZ_CACHE_SECONDS": 30.0}
    for state in (worker_check_cache, readyz_log, healthz_log):
        state.clear()
    yield
    for state in (worker_check_cache, readyz_log, healthz_log):
        state.clear()


class PingCounter:
    """Counts the remote-control broadcasts (pings) that reach the broker's fanout."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(f"/{db}.celery.pidbox*")
        self.pubsub.get_message(timeout=2)  # the subscription confirmation
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                self.count += 1

    def settle(self) -> int:
        time.sleep(0.5)  # a broadcast published just now reaches the subscriber
        return self.count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.pubsub.close()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/readyz", "/readyz/"])
def test_readyz_answers_503_naming_the_worker_when_no_worker_answers(path):
    response = APIClient().get(path)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["failing"] == ["worker"]
    assert body["checks"]["database"] == {"state": "ok"}
    assert body["checks"]["broker"] == {"state": "ok"}
    assert body["checks"]["worker"] == {"state": "error", "detail": "no worker answered a ping within 0.5 s"}


@pytest.mark.django_db
def test_readyz_answers_503_naming_the_broker_when_the_broker_is_unreachable(monkeypatch):
    # Celery reads the broker URL from this variable first, at each new connection.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert celery_app.conf.broker_url == "redis://127.0.0.1:1/0"
    response = APIClient().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker", "worker"]
    assert body["checks"]["broker"]["state"] == "error"
    assert body["checks"]["broker"]["detail"] == "the broker did not answer (ConnectionError)"  # no host, no port
    assert body["checks"]["worker"] == {"state": "unknown", "detail": "not asked: the broker is down"}
    assert body["checks"]["database"] == {"state": "ok"}


@pytest.mark.django_db(transaction=True)
def test_readyz_answers_503_naming_the_database_when_it_refuses_connections(monkeypatch):
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")  # nothing listens there
    try:
        response = APIClient().get("/readyz")
    finally:
        connection.close()
    assert response.status_code == 503
    body = response.json()
    assert "database" in body["failing"]
    assert body["checks"]["database"]["state"] == "error"
    assert body["checks"]["database"]["detail"].startswith("the database did not answer")
    assert body["checks"]["broker"] == {"state": "ok"}


@pytest.mark.django_db
def test_probes_within_the_cache_window_send_one_ping(broker_url, settings):
    counter = PingCounter(broker_url)
    try:
        for _ in range(3):
            assert APIClient().get("/readyz").status_code == 503
        assert counter.settle() == 1
        settings.PROMPTPILOT = {**settings.PROMPTPILOT, "READYZ_CACHE_SECONDS": 0.0}  # expired: ping again
        assert APIClient().get("/readyz").status_code == 503
        assert counter.settle() == 2
    finally:
        counter.close()


@pytest.mark.django_db
def test_healthz_stays_a_liveness_check_without_a_worker():
    response = APIClient().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def _probe_records(caplog) -> list[logging.LogRecord]:
    """What the probes logged: our readiness events and anything django.request added."""
    return [r for r in caplog.records if r.name in ("promptpilot.common.readiness", "django.request")]


@pytest.mark.django_db
def test_a_failing_readyz_logs_one_warning_per_change_naming_the_part(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    for _ in range(4):
        assert APIClient().get("/readyz").status_code == 503
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # now the broker fails too
    for _ in range(3):
        assert APIClient().get("/readyz").status_code == 503

    records = _probe_records(caplog)
    assert [(r.levelname, r.getMessage()) for r in records] == [("WARNING", "readiness.failing")] * 2, \
        "one line per change, none from django.request"
    first, second = records
    assert first.probe == "readyz" and first.failing == ["worker"] and first.previously_failing == []
    assert first.causes == {"worker": "no worker answered a ping within 0.5 s"}
    assert second.failing == ["broker", "worker"] and second.previously_failing == ["worker"]
    assert second.causes["broker"].startswith("ConnectionError: ")
    assert "127.0.0.1:1" in second.causes["broker"], "the log (not the answer) says where it failed"
    assert not [r for r in records if r.exc_info], "no traceback per probe"


@pytest.mark.django_db(transaction=True)
def test_a_failing_healthz_logs_one_warning_and_one_recovery(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")  # nothing listens there
    try:
        assert [APIClient().get("/healthz").status_code for _ in range(3)] == [503] * 3
    finally:
        connection.close()
        monkeypatch.undo()
    assert [APIClient().get("/healthz").status_code for _ in range(2)] == [200] * 2

    records = _probe_records(caplog)
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "readiness.failing"), ("INFO", "readiness.recovered")]
    failing, recovered = records
    assert failing.probe == "healthz" and failing.failing == ["database"]
    assert "OperationalError" in failing.causes["database"]
    assert recovered.probe == "healthz" and recovered.previously_failing == ["database"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz/"])
def test_probes_answer_whatever_the_host_header_while_other_paths_still_check_it(settings, path):
    """docker-compose's health check calls http://127.0.0.1:8000/readyz; a deployment's
    DJANGO_ALLOWED_HOSTS names its public host only."""
    settings.ALLOWED_HOSTS = ["pilot.example.com"]
    probe = APIClient().get(path, HTTP_HOST="127.0.0.1:8000")
    assert probe.status_code in (200, 503) and probe.json()["status"] in ("ok", "error")
    assert probe["X-Request-ID"] and probe["Cache-Control"].startswith("max-age=0")
    assert APIClient().get("/api/auth/token/", HTTP_HOST="127.0.0.1:8000").status_code == 400
    assert APIClient().get("/healthzz", HTTP_HOST="127.0.0.1:8000").status_code == 400
