"""Unsafe durability settings stop web, worker and beat at start-up."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workflows.tests.support.processes import ROOT, celery_argv

pytestmark = pytest.mark.single_pass  # reaches no fast-statement branch (checks run in their own processes)


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPILOT_")}
    env.update({"CELERY_BROKER_URL": "memory://", "DJANGO_SETTINGS_MODULE": "promptpilot.settings", **overrides})
    return env


def test_backoff_longer_than_half_the_visibility_timeout_fails_manage_check():
    env = _env(PROMPTPILOT_MAX_BACKOFF_SECONDS="4000", CELERY_VISIBILITY_TIMEOUT="3600")
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "promptpilot.E001" in done.stderr


def test_an_inline_budget_longer_than_half_the_visibility_timeout_fails_manage_check():
    env = _env(PROMPTPILOT_INLINE_STEP_BUDGET_SECONDS="1900", CELERY_VISIBILITY_TIMEOUT="3600")
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "promptpilot.E003" in done.stderr


def test_worker_refuses_to_start_when_the_lease_outlives_the_visibility_timeout():
    env = _env(PROMPTPILOT_STEP_LEASE_SECONDS="3000", CELERY_VISIBILITY_TIMEOUT="3600")
    done = subprocess.run(celery_argv("worker", "--pool", "solo", "-l", "warning"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "refuses to start" in done.stdout + done.stderr
    assert "promptpilot.E002" in done.stdout + done.stderr


def test_default_settings_pass_the_checks():
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
