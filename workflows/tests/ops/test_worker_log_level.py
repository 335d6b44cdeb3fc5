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


def _worker(name: str, env: dict[str, str], log_dir, *level_args: str, queue: str | None = None) -> ServiceProcess:
    # A queue of its own: it takes no task another test sends.
    return ServiceProcess(name, celery_argv("--quiet", "worker", *level_args, "-n", f"{name}@%h",
                                            "-Q", queue or f"log-level-{uuid.uuid4().hex}", "--without-gossip",
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


def test_a_prefork_worker_without_l_at_debug_writes_celerys_task_lines_again(service_env, tmp_path):
    """Celery's own line per task is off at INFO (promptpilot/common/logs.py) and back at
    PROMPTPILOT_LOG_LEVEL=DEBUG, in a prefork worker's main process ("received") and in the
    pool child that ran the task ("succeeded": the child keeps the configuration it forked
    with). The same worker at INFO, running a workflow in its children:
    workflows/tests/integration/test_observability.py."""
    queue = f"log-level-{uuid.uuid4().hex}"
    env = {k: v for k, v in service_env.items() if k != "PROMPTPILOT_LOG_FORMAT"}
    env.update({"PROMPTPILOT_LOG_LEVEL": "DEBUG", "PROMPTPILOT_WORKER_POOL": "prefork",
                "PROMPTPILOT_WORKER_CONCURRENCY": "1"})
    worker = _worker("prefork-debug", env, tmp_path, queue=queue)
    name = f"prefork-debug@{socket.gethostname()}"
    try:
        worker.wait_for_log("ready.", timeout=60)
        stats = celery_app.control.inspect(destination=[name], timeout=5).stats()[name]
        assert stats["pool"]["implementation"].startswith("celery.concurrency.prefork")
        task_id = celery_app.send_task("celery.accumulate", args=(7,), queue=queue).id

        def task_lines() -> dict[str, dict]:
            return {r["logger"]: r for r in _records(worker) if task_id in r["message"]}

        wait_for(lambda: "celery.app.trace" in task_lines(), 30, "the child's 'succeeded' line")
    finally:
        worker.stop()
    lines = task_lines()
    assert "succeeded in" in lines["celery.app.trace"]["message"]
    assert "received" in lines["celery.worker.strategy"]["message"]
    assert [r for r in _records(worker) if r["level"] == "DEBUG"], "the worker's DEBUG lines"
