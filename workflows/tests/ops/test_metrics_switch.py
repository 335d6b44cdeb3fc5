"""PROMPTPILOT_METRICS_ENABLED=false turns the event counters off (bench/load.py measures
their cost with it); the default records them. Each case starts a fresh process, because
the switch is read when promptpilot/common/metrics.py is imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import json, django
django.setup()
from prometheus_client import REGISTRY, generate_latest
from promptpilot.common import metrics
metrics.EXECUTIONS_CREATED.labels("API").inc()
metrics.STEP_DURATION.labels("PROMPT").observe(0.2)
metrics.model_calls_observe([{"provider": "openai", "model": "m", "status": "ok", "latency_ms": 5,
                              "tokens": {"input": 3, "output": 2}}])
text = generate_latest(REGISTRY).decode()
print(json.dumps({"created": 'promptpilot_executions_created_total{trigger_type="API"} 1.0' in text,
                  "any_event_metric": "promptpilot_" in text}))
"""


def probe(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environment.update(DJANGO_SETTINGS_MODULE="promptpilot.settings", **env)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("value", ["", "true"])
def test_event_metrics_are_recorded_by_default(value):
    assert probe(PROMPTPILOT_METRICS_ENABLED=value) == {"created": True, "any_event_metric": True}


def test_metrics_enabled_false_records_nothing_and_registers_nothing():
    assert probe(PROMPTPILOT_METRICS_ENABLED="false") == {"created": False, "any_event_metric": False}
