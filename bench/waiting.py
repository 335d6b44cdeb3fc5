"""Waiting benchmark: N runs parked on an APPROVAL step, then approved in a burst through the API.

    python bench/waiting.py [--n 2000] [--clients 8] [--timeout 300] [--json FILE]

One worker is started with the contract command (``celery -A promptpilot worker -l
warning``, no pool flags) on PostgreSQL + Redis. The bench workflow is ``review``
(APPROVAL) then ``done`` (TRANSFORM). It measures:

  parked   N runs started with ``execution_start``; wall until all are WAITING; the worker's
           RSS and the bench database's connections (pg_stat_activity) with the worker
           idle before the runs and with all N parked (goal: nothing grows with N), and
           the Celery tasks the worker holds while they wait (inspect: active, reserved,
           scheduled; goal: 0);
  resume   every run approved through ``POST /api/executions/{id}/approve`` (the Django
           WSGI stack in this process, ``--clients`` threads); resume-to-completion per run
           = the run's ``completed_at`` - its approval's ``decided_at``: p50, p99 (goal p99 <
           1 s), and throughput (runs completed per second from the first approval).

It uses a database of its own (default ``bench_waiting``, created and migrated if needed)
and a Redis database of its own (default 14, flushed), one run at a time on each
(bench/common.py). Figures: bench/README.md, "Waiting".
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.runtime import group_usage, proc_table  # noqa: E402  (/proc readers)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_waiting"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
APP_NAME = "promptpilot-bench-waiting"
OWNER_KEY = "promptpilot-bench-waiting:owner"
OWNER_TTL_SECONDS = 1800
ADVISORY_LOCK = 0x70705F7761697421  # "pp_wait!"
WORKFLOW_NAME = "bench: approval then transform (waiting)"


def pg_connections() -> dict[str, int]:
    """The bench database's backends: ours (this script) and the others (the worker)."""
    import psycopg

    with psycopg.connect(common.conninfo("postgres"), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT application_name = %s, state, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1, 2",
            [APP_NAME, os.environ["DATABASE_URL"].rsplit("/", 1)[1]]).fetchall()
    found = {"ours": 0, "worker": 0, "idle_in_transaction": 0}
    for ours, state, count in rows:
        found["ours" if ours else "worker"] += count
        if state == "idle in transaction":
            found["idle_in_transaction"] += count
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    common.configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL, app_name=APP_NAME)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import close_old_connections
    from django.utils.dateparse import parse_datetime
    from rest_framework.test import APIClient

    common.ensure_database()
    common.claim_database(ADVISORY_LOCK, "bench/waiting.py")
    common.ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/waiting.py")
    info = common.machine()

    from workflows.models import ExecutionStatus, WorkflowExecution, WorkflowStepExecution
    from workflows.services.executions import execution_start
    from workflows.tests.factories import make_workflow

    user, _ = get_user_model().objects.get_or_create(username="bench-waiting")
    workflow = make_workflow(user, name=WORKFLOW_NAME, steps=[
        {"name": "review", "type": "APPROVAL", "config": {"message": "Approve run {{ input.i }}?"}},
        {"name": "done", "type": "TRANSFORM", "config": {"template": "approved {{ input.i }}"}},
    ], variables=[{"name": "i", "type": "NUMBER"}])

    def approve_all(pending: list, failures: list[str]) -> None:
        lock = threading.Lock()

        def approve() -> None:
            client = APIClient(HTTP_HOST="localhost")  # a host the shipped ALLOWED_HOSTS accepts
            client.force_authenticate(user)
            while True:
                with lock:
                    if not pending:
                        break
                    execution_id = pending.pop()
                response = client.post(f"/api/executions/{execution_id}/approve", {}, format="json")
                if response.status_code != 200:
                    failures.append(f"{execution_id}: {response.status_code}")
            close_old_connections()

        threads = [threading.Thread(target=approve) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def park(n: int) -> list:
        ids = [execution_start(workflow=workflow, inputs={"i": i}, started_by=user).id for i in range(n)]
        common.wait_until(lambda: WorkflowExecution.objects.filter(pk__in=ids, status=ExecutionStatus.WAITING)
                          .count() == n, timeout=args.timeout, interval=0.5, what=f"{n} runs to park",
                          check=worker.check_alive)
        return ids

    worker = Worker(Path(tempfile.mkdtemp(prefix="bench-waiting-")))
    try:
        worker.wait_ready()
        # Warm-up: 20 runs parked and approved, so the worker's pool and imports are in place
        # and "idle" below is a warm worker with nothing waiting.
        warm = park(20)
        approve_all(list(warm), [])
        common.wait_until(lambda: WorkflowExecution.objects.filter(pk__in=warm, status=ExecutionStatus.COMPLETED)
                          .count() == len(warm), timeout=args.timeout, interval=0.5, what="the warm-up runs",
                          check=worker.check_alive)
        time.sleep(2)
        idle = {"rss_mb": worker.rss_mb(), **pg_connections()}

        started = time.monotonic()
        ids = park(args.n)
        park_wall = time.monotonic() - started
        time.sleep(2)
        parked = {"rss_mb": worker.rss_mb(), **pg_connections(), "tasks": worker.tasks_held()}

        failures: list[str] = []
        burst = time.monotonic()
        approve_all(list(ids), failures)
        approve_wall = time.monotonic() - burst
        if failures:
            raise SystemExit(f"{len(failures)} approvals failed, e.g. {failures[:3]}")
        common.wait_until(lambda: WorkflowExecution.objects.filter(pk__in=ids, status=ExecutionStatus.COMPLETED)
                          .count() == args.n, timeout=args.timeout, interval=0.5, what="every run to complete",
                          check=worker.check_alive)
        decided = dict(WorkflowStepExecution.objects.filter(execution_id__in=ids, step_name="review")
                       .values_list("execution_id", "output__decided_at"))
        ended = dict(WorkflowExecution.objects.filter(pk__in=ids).values_list("id", "completed_at"))
        latencies = [(ended[i] - parse_datetime(decided[i])).total_seconds() for i in ids]
        first = min(parse_datetime(d) for d in decided.values())
        last = max(ended.values())
        figures = {
            "machine": info, "n": args.n, "clients": args.clients, "failures": len(failures),
            "park_wall_s": round(park_wall, 2), "idle": idle, "parked": parked,
            "approve_burst_s": round(approve_wall, 2),
            "resume_to_completion_ms": {"p50": round(common.p50(latencies) * 1000, 1),
                                        "p99": round(common.percentile(latencies, 0.99) * 1000, 1),
                                        "max": round(max(latencies) * 1000, 1)},
            "throughput_runs_per_s": round(args.n / max((last - first).total_seconds(), 1e-9), 1),
        }
    finally:
        worker.stop()
        common.flush_broker()
    print(json.dumps(figures, indent=2))
    goal = figures["resume_to_completion_ms"]["p99"] < 1000
    flat = parked["rss_mb"] - idle["rss_mb"] < 50 and parked["worker"] <= idle["worker"] + 1
    print(f"p99 resume < 1 s: {'met' if goal else 'NOT met'}; worker RSS and connections flat while parked: "
          f"{'yes' if flat else 'NO'}; tasks held while parked: {parked['tasks']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if not failures else 1


class Worker(common.ChildProcess):
    """The contract command (no pool flags) in its own process group."""

    label = "worker"

    def __init__(self, log_dir: Path) -> None:
        name = f"waiting-{os.getpid()}"
        self.nodename = f"{name}@{socket.gethostname()}"
        super().__init__([sys.executable, "-m", "celery", "-A", "promptpilot", "worker", "-l", "info", "-n",
                          f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                         log_dir / "worker.log", common.child_env())

    def wait_ready(self) -> None:
        common.wait_until(lambda: "ready." in self.tail(), timeout=60, interval=0.5, what="the worker to start",
                          check=self.check_alive)

    def rss_mb(self) -> float:
        return round(group_usage(proc_table(), self.pgid)["rss"] / 2**20, 1)

    def tasks_held(self) -> dict[str, int]:
        from promptpilot.celery import app

        inspect = app.control.inspect(destination=[self.nodename], timeout=5)
        return {kind: sum(len(v) for v in (getattr(inspect, kind)() or {}).values())
                for kind in ("active", "reserved", "scheduled")}


if __name__ == "__main__":
    raise SystemExit(main())
