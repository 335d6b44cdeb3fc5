"""Beat's health check (docker-compose): ``manage.py beat_heartbeat`` answers whether beat
handed a task to the broker within the last minute (triggers/beat.py)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from celery.beat import ScheduleEntry, SchedulingError
from django.core.management import CommandError, call_command

from promptpilot.celery import app
from triggers.beat import DatabaseScheduler
from workflows.tests.durability.helpers import wait_for
from workflows.tests.support.processes import ServiceProcess, celery_argv

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def heartbeat(settings, tmp_path) -> Path:
    path = tmp_path / "var" / "beat-heartbeat"
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "BEAT_HEARTBEAT_FILE": path}
    return path


def _entry(*args) -> ScheduleEntry:
    # A queue no worker reads: the message waits in the test broker, nothing runs it.
    return ScheduleEntry(name="heartbeat-test", task="celery.accumulate", schedule=1.0, args=args, app=app,
                         options={"queue": f"beat-heartbeat-{uuid.uuid4().hex}"})


def _health(*args: str) -> str:
    out = io.StringIO()
    call_command("beat_heartbeat", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_beat_is_healthy_once_it_has_sent_a_task_and_not_before(heartbeat):
    scheduler = DatabaseScheduler(app=app, lazy=True)  # lazy: without beat's start-up (it reconnects)
    with pytest.raises(CommandError, match=f"beat has sent no task yet: no heartbeat at {heartbeat}"):
        _health()

    scheduler.apply_async(_entry(1), advance=False)
    assert _health().startswith("beat sent a task ")


@pytest.mark.django_db
def test_a_task_beat_could_not_send_leaves_the_heartbeat_stale(heartbeat):
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.apply_async(_entry(1), advance=False)
    two_minutes_ago = time.time() - 120
    os.utime(heartbeat, (two_minutes_ago, two_minutes_ago))

    with pytest.raises(SchedulingError):
        scheduler.apply_async(_entry(object()), advance=False)  # not serialisable: never reaches the broker
    with pytest.raises(CommandError, match=r"beat's last send was \d+ s ago \(more than 60 s\): it is stuck"):
        _health()
    assert _health("--max-age", "300").startswith("beat sent a task ")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)  # the flush after it removes the periodic tasks that beat installs
def test_a_running_beat_passes_the_compose_health_check_and_a_stopped_one_fails_it(service_env, tmp_path):
    path = tmp_path / "beat-heartbeat"
    env = {**service_env, "PROMPTPILOT_BEAT_HEARTBEAT_FILE": str(path)}
    beat = ServiceProcess("heartbeat-beat", celery_argv("beat"), env, tmp_path)  # docker-compose's command
    try:
        wait_for(path.exists, 60, "beat's first send")
        check = subprocess.run([sys.executable, "manage.py", "beat_heartbeat"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
    finally:
        beat.stop()
    assert check.returncode == 0, check.stderr + beat.log()[-2000:]

    stopped_long_ago = time.time() - 90
    os.utime(path, (stopped_long_ago, stopped_long_ago))
    check = subprocess.run([sys.executable, "manage.py", "beat_heartbeat"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "beat's last send was" in check.stderr and "(more than 60 s)" in check.stderr
