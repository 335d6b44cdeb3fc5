"""Live page benchmark: how long after a step's checkpoint its execution page shows it.

    python bench/live_page.py [--runs 20] [--steps 3] [--delay-ms 1000] [--json FILE]

Starts a real worker (the contract command, no pool flags) and the web process
(gunicorn, as ``make run`` starts it) on PostgreSQL + Redis, logs in through the login
form and, for each of ``--runs`` runs of a workflow of ``--steps`` echo PROMPT steps
(``delay_ms`` each), does what the execution page does in a browser: load
``/executions/{id}/``, then GET its live partial every ``POLL_SECONDS`` (the page's
``hx-trigger="every 1s"``, with htmx's ``HX-Request`` header) until it answers 286.

For every step: latency = the time the first poll answer showing it COMPLETED arrived
- the step's checkpoint (``completed_at``, written by the worker). It includes the wait
for the next poll (uniform over the poll interval), the server's render of the partial
and the transfer. A browser opens the page at any moment of a run, so each run's page is
loaded after a random pause of up to one poll interval (and the step delay is not a
multiple of it): the polls fall at random points of the steps rather than in step with
them. Also reported: the partial's response time alone. Goal (issue 10):
p50 < 1.5 s. See the "Live page" section of bench/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_live"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/6"  # flushed: a database of its own
APP_NAME = "promptpilot-bench-live"
OWNER_KEY = "promptpilot-bench-live:owner"
OWNER_TTL_SECONDS = 900
ADVISORY_LOCK = 0x70705F6C69766521  # "pp_live!"
BENCH_USER = "bench-live"
PASSWORD = "bench-live-pw-123"
GOAL_P50_S = 1.5
# <div class="tl-row" data-step="NAME"> ... the row's first badge is the step's status.
ROW = re.compile(r'<div class="tl-row" data-step="([^"]+)">.*?<span class="badge badge-([a-z_]+)">', re.S)

common.configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL, app_name=APP_NAME)

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402

from workflows.pages.executions import HTMX_STOP_POLLING, POLL_SECONDS  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- services


class Worker(common.ChildProcess):
    label = "worker"

    def __init__(self, log_dir: Path) -> None:
        super().__init__([sys.executable, "-m", "celery", "-A", "promptpilot", "worker", "-l", "info",
                          "-n", f"live-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
                          "--without-heartbeat"], log_dir / "worker.log", common.child_env())


class Web(common.ChildProcess):
    label = "gunicorn"

    def __init__(self, log_dir: Path, port: int) -> None:
        self.port = port
        super().__init__([sys.executable, "-m", "gunicorn", "promptpilot.wsgi", "--bind", f"127.0.0.1:{port}",
                          "--workers", "2", "--threads", "4", "--no-control-socket"], log_dir / "web.log",
                         common.child_env())

    def answers(self) -> bool:
        with contextlib.suppress(Exception):
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status == 200
        return False


def start_services(log_dir: Path, port: int) -> list[common.ChildProcess]:
    services: list[common.ChildProcess] = []
    try:
        worker = Worker(log_dir)
        services.append(worker)
        web = Web(log_dir, port)
        services.append(web)
        common.wait_until(lambda: "ready." in worker.tail(), timeout=90, interval=0.2, what="the worker's 'ready.'",
                          check=worker.check_alive)
        common.wait_until(web.answers, timeout=60, interval=0.2, what="gunicorn's answer on /healthz",
                          check=web.check_alive)
    except BaseException:
        for service in services:
            service.stop()
        raise
    return services


# --------------------------------------------------------------------------- fixtures


def bench_workflow(steps: int, delay_ms: int):
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow, WorkflowStep
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    user.set_password(PASSWORD)
    user.save()
    name = f"bench: {steps} echo steps of {delay_ms} ms (live page)"
    workflow = Workflow.objects.filter(owner=user, name=name).first()
    if workflow is not None:  # from an earlier run (its past runs stay)
        return user, workflow
    workflow = Workflow.objects.create(owner=user, name=name)
    for order in range(1, steps + 1):
        WorkflowStep.objects.create(
            workflow=workflow, order=order, name=f"step_{order}", type="PROMPT",
            config={"template": f"Step {order} of the live page bench",
                    "model": {"provider": "echo", "model": "echo", "delay_ms": delay_ms}})
    workflow_version_create(workflow=workflow, note="bench/live_page.py")
    return user, workflow


def log_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30, trust_env=False)
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    answer = client.post("/accounts/login/", data={"csrfmiddlewaretoken": token, "username": BENCH_USER,
                                                   "password": PASSWORD}, headers={"Referer": f"{base}/accounts/login/"})
    if answer.status_code != 302:
        raise SystemExit(f"Login failed ({answer.status_code}).")
    return client


# --------------------------------------------------------------------------- one run


def watch(client: httpx.Client, execution_id, timeout: float, pause: float) -> tuple[dict[str, float], list[float], int]:
    """Load the page, then poll its live partial every POLL_SECONDS (from the page's load,
    as htmx does) until the 286. Returns when each step was first seen COMPLETED (epoch
    seconds, at the answer's arrival), the partial's response times and the poll count."""
    seen: dict[str, float] = {}
    responses: list[float] = []
    time.sleep(pause)
    page = client.get(f"/executions/{execution_id}/")
    page.raise_for_status()
    loaded = time.monotonic()
    deadline = loaded + timeout
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        time.sleep(max(loaded + polls * POLL_SECONDS - time.monotonic(), 0))
        sent = time.monotonic()
        answer = client.get(f"/executions/{execution_id}/live", headers={"HX-Request": "true"})
        arrived, wall = time.monotonic(), time.time()
        responses.append(arrived - sent)
        if answer.status_code not in (200, HTMX_STOP_POLLING):
            raise RuntimeError(f"The live partial answered {answer.status_code}")
        for name, status in ROW.findall(answer.text):
            if status == "completed" and name not in seen:
                seen[name] = wall
        if answer.status_code == HTMX_STOP_POLLING:
            return seen, responses, polls
    raise TimeoutError(f"Execution {execution_id} did not finish within {timeout} s")


def run(args) -> dict:
    from workflows.models import WorkflowExecution
    from workflows.services.executions import execution_start

    common.ensure_database()
    common.claim_database(ADVISORY_LOCK, "bench/live_page.py")
    info = common.machine()
    user, workflow = bench_workflow(args.steps, args.delay_ms)
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    print(f"logs: {log_dir}", flush=True)
    common.ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/live_page.py")
    services: list[common.ChildProcess] = []
    latencies: list[float] = []
    responses: list[float] = []
    pauses = random.Random(args.seed)
    try:
        services = start_services(log_dir, port)
        client = log_in(f"http://127.0.0.1:{port}")
        for index in range(args.warmup + args.runs):
            execution = execution_start(workflow=workflow, inputs={}, started_by=user)
            seen, times, _ = watch(client, execution.pk, timeout=60 + args.steps * args.delay_ms / 1000,
                                   pause=pauses.uniform(0, POLL_SECONDS))
            finished = WorkflowExecution.objects.get(pk=execution.pk)
            if finished.status != "COMPLETED":
                raise RuntimeError(f"Run {execution.pk} ended {finished.status}: {finished.error}")
            if index < args.warmup:
                continue
            responses.extend(times)
            for step in finished.step_executions.order_by("step_order"):
                latencies.append(seen[step.step_name] - step.completed_at.timestamp())
            print(f"run {index - args.warmup + 1}/{args.runs}: "
                  + " ".join(f"{seen[s.step_name] - s.completed_at.timestamp():.2f}s"
                             for s in finished.step_executions.order_by("step_order")), flush=True)
    finally:
        for service in services:
            service.stop()
        common.flush_broker()
    return {
        "machine": info,
        "runs": args.runs, "steps": args.steps, "delay_ms": args.delay_ms, "poll_seconds": POLL_SECONDS,
        "samples": len(latencies),
        "latency_s": {"p50": common.p50(latencies), "p95": common.p95(latencies),
                      "min": min(latencies), "max": max(latencies)},
        "partial_ms": {"p50": common.p50(responses) * 1000, "p95": common.p95(responses) * 1000},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=1300, help="echo's delay per step")
    parser.add_argument("--seed", type=int, default=10, help="of the random pauses before loading the page")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = run(args)
    latency, partial = result["latency_s"], result["partial_ms"]
    print()
    for key, value in result["machine"].items():
        print(f"{key}: {value}")
    print(f"checkpoint → shown on the page, {result['samples']} steps of {result['runs']} runs "
          f"(poll every {POLL_SECONDS} s): p50 {latency['p50']:.2f} s, p95 {latency['p95']:.2f} s "
          f"(min {latency['min']:.2f}, max {latency['max']:.2f})")
    print(f"live partial response: p50 {partial['p50']:.1f} ms, p95 {partial['p95']:.1f} ms")
    met = latency["p50"] < GOAL_P50_S
    print(f"goal p50 < {GOAL_P50_S} s: {'met' if met else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
