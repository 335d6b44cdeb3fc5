"""The web tier as deployed: gunicorn (two worker processes) prints JSON lines, its access
log included, and /metrics adds up what both workers counted (PROMETHEUS_MULTIPROC_DIR)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

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


def test_gunicorn_prints_json_lines_and_metrics_add_up_its_workers(service_env, user, tmp_path):
    trigger, secret = create_trigger(customer_workflow(user), "WEBHOOK", name="Orders")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {k: v for k, v in service_env.items() if k not in ("PROMPTPILOT_LOG_FORMAT", "DJANGO_DEBUG")}
    env.update({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PROMPTPILOT_METRICS_TOKEN": TOKEN})
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        # The Dockerfile's command (gunicorn.conf.py is read from the working directory).
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "promptpilot.wsgi", "--bind", f"127.0.0.1:{port}",
                                "--workers", "2", "--access-logfile", "-", "--no-control-socket"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _get(f"{base}/healthz")[0] == 200, 60, "gunicorn to answer /healthz")
            status, _, headers = _get(f"{base}/healthz", **{"X-Request-ID": "probe-42"})
            assert status == 200 and headers["X-Request-ID"] == "probe-42"
            assert [_deliver(base, trigger, secret) for _ in range(DELIVERIES)] == [202] * DELIVERIES
            status, body, _ = _get(f"{base}/metrics", Authorization=f"Bearer {TOKEN}")
            assert status == 200, body
        finally:
            web.terminate()
            web.wait(timeout=30)

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
    assert any('"GET /healthz HTTP/1.1" 200' in r["message"] for r in access)
    assert sum('"POST /api/webhooks/' in r["message"] for r in access) == DELIVERIES
    fired = [r for r in records if r["message"] == "trigger.fired"]
    assert len(fired) == DELIVERIES and {r["trigger_id"] for r in fired} == {str(trigger.pk)}
    assert all(r.get("request_id") for r in fired), "each delivery's lines carry its request id"
