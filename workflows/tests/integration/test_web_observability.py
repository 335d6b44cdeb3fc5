"""The web tier as deployed: gunicorn (two worker processes) prints JSON lines at
PROMPTPILOT_LOG_LEVEL, its access log included (with each request's id), and /metrics adds
up what both workers counted (PROMETHEUS_MULTIPROC_DIR)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from triggers.services.webhooks import webhook_signature
from triggers.tests.helpers import create_trigger, customer_workflow
from workflows.tests.durability.helpers import wait_for
from workflows.tests.support.metrics import parse
from workflows.tests.support.processes import ROOT

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TOKEN = "scrape-token-for-the-test"
DELIVERIES = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, **headers: str) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)
    except OSError:
        return 0, b"", {}


def _deliver(base: str, trigger, secret: str) -> int:
    body = json.dumps({"customer": "Ada"}).encode()
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": webhook_signature(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)}
    request = urllib.request.Request(f"{base}/api/webhooks/{trigger.pk}", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


@contextmanager
def _gunicorn(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """The Dockerfile's command (gunicorn.conf.py is read from the working directory),
    answering /healthz; yields its base URL, its output going to ``log_path``."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "promptpilot.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", "2", "--access-logfile", "-", "--no-control-socket"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _get(f"{base}/healthz")[0] == 200, 60, "gunicorn to answer /healthz")
            yield base
        finally:
            web.terminate()
            web.wait(timeout=30)


def _default_env(service_env: dict[str, str]) -> dict[str, str]:
    """What docker-compose gives web: no log format, no debug."""
    return {k: v for k, v in service_env.items() if k not in ("PROMPTPILOT_LOG_FORMAT", "DJANGO_DEBUG")}


def test_gunicorn_prints_json_lines_and_metrics_add_up_its_workers(service_env, user, tmp_path):
    trigger, secret = create_trigger(customer_workflow(user), "WEBHOOK", name="Orders")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = _default_env(service_env)
    env.update({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PROMPTPILOT_METRICS_TOKEN": TOKEN})
    log_path = tmp_path / "web.log"
    with _gunicorn(env, log_path) as base:
        status, _, headers = _get(f"{base}/healthz", **{"X-Request-ID": "probe-42"})
        assert status == 200 and headers["X-Request-ID"] == "probe-42"
        assert [_deliver(base, trigger, secret) for _ in range(DELIVERIES)] == [202] * DELIVERIES
        status, body, _ = _get(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")
        assert status == 200, body

    samples = parse(body.decode())
    invocations = ("promptpilot_trigger_invocations_total", (("outcome", "ACCEPTED"), ("trigger_type", "WEBHOOK")))
    assert samples[invocations] == DELIVERIES, "every worker's deliveries, from the files in the folder"
    assert samples[("promptpilot_executions_created_total", (("trigger_type", "WEBHOOK"),))] == DELIVERIES
    assert list(metrics_dir.glob("counter_*.db"))

    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [line for line in lines if line.startswith(("[", "127.0.0.1 - "))], "no plain gunicorn line"
    assert any(r["logger"] == "gunicorn.error" and r["message"].startswith("Booting worker") for r in records)
    access = [r for r in records if r["logger"] == "gunicorn.access"]
    probe = [r for r in access if r.get("request_id") == "probe-42"]
    assert len(probe) == 1 and '"GET /healthz HTTP/1.1" 200' in probe[0]["message"]
    assert (probe[0]["method"], probe[0]["path"], probe[0]["status_code"]) == ("GET", "/healthz", 200)
    assert isinstance(probe[0]["duration_ms"], int)
    deliveries = [r for r in access if '"POST /api/webhooks/' in r["message"]]
    assert len(deliveries) == DELIVERIES and all(r["status_code"] == 202 for r in deliveries)
    fired = [r for r in records if r["message"] == "trigger.fired"]
    assert len(fired) == DELIVERIES and {r["trigger_id"] for r in fired} == {str(trigger.pk)}
    assert all(r.get("request_id") for r in fired), "each delivery's lines carry its request id"
    assert {r["request_id"] for r in deliveries} == {r["request_id"] for r in fired}, \
        "a delivery's access line carries the id of the lines it caused"


def test_gunicorn_honours_the_log_level_for_its_own_lines_and_the_access_log(service_env, tmp_path):
    env = {**_default_env(service_env), "PROMPTPILOT_LOG_LEVEL": "WARNING"}
    log_path = tmp_path / "web.log"
    with _gunicorn(env, log_path) as base:
        assert _get(f"{base}/no-such-page", **{"X-Request-ID": "lost-7"})[0] == 404

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert records, "gunicorn printed JSON lines"
    assert {r["level"] for r in records} <= {"WARNING", "ERROR", "CRITICAL"}, \
        "no INFO line: neither gunicorn's boot lines nor the access log"
    not_found = [r for r in records if r["logger"] == "django.request"]
    assert [(r["message"], r["status_code"], r["request_id"]) for r in not_found] == \
        [("Not Found: /no-such-page", 404, "lost-7")]
