"""A worker logs at PROMPTPILOT_LOG_LEVEL unless ``-l`` is given (promptpilot/celery.py):
Celery's own default without ``-l`` is WARNING, which would hide every INFO event."""
from __future__ import annotations

import json
import socket
import uuid

import pytest

from promptpilot.celery import app as celery_app
from workflows.tests.durability.helpers import wait_for
from workflows.tests.support.processes import ServiceProcess, celery_argv

pytestmark = pytest.mark.worker


def _worker(name: str, env: dict[str, str], log_dir, *level_args: str) -> ServiceProcess:
    # A queue of its own: it takes no task another test sends.
    return ServiceProcess(name, celery_argv("--quiet", "worker", *level_args, "-n", f"{name}@%h",
                                            "-Q", f"log-level-{uuid.uuid4().hex}", "--without-gossip",
                                            "--without-mingle", "--without-heartbeat"), env, log_dir)


def _records(process: ServiceProcess) -> list[dict]:
    return [json.loads(line) for line in process.log().splitlines() if line.startswith("{")]


def test_a_worker_without_l_logs_info_lines_at_the_default_level(service_env, tmp_path):
    env = {k: v for k, v in service_env.items() if k not in ("PROMPTPILOT_LOG_LEVEL", "PROMPTPILOT_LOG_FORMAT")}
    worker = _worker("bare", env, tmp_path)
    try:
        worker.wait_for_log("ready.", timeout=60)
    finally:
        worker.stop()
    ready = [r for r in _records(worker) if r["message"].endswith(" ready.")]
    assert ready and ready[0]["level"] == "INFO" and ready[0]["logger"] == "celery.apps.worker"


def test_an_explicit_l_wins_over_the_configured_level(service_env, tmp_path):
    env = {**service_env, "PROMPTPILOT_LOG_LEVEL": "INFO"}
    worker = _worker("quiet", env, tmp_path, "-l", "warning")
    name = f"quiet@{socket.gethostname()}"
    try:
        wait_for(lambda: celery_app.control.ping(destination=[name], timeout=0.5), 60, "the worker to answer a ping")
    finally:
        worker.stop()
    assert not [r for r in _records(worker) if r["level"] in ("DEBUG", "INFO")], worker.log()[-2000:]
