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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_live"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/6"  # flushed: a database of its own
OWNER_KEY = "promptpilot-bench-live:owner"
OWNER_TTL_SECONDS = 900
BENCH_USER = "bench-live"
PASSWORD = "bench-live-pw-123"
GOAL_P50_S = 1.5
# <div class="tl-row" data-step="NAME"> ... the row's first badge is the step's status.
ROW = re.compile(r'<div class="tl-row" data-step="([^"]+)">.*?<span class="badge badge-([a-z_]+)">', re.S)

os.environ["DJANGO_SETTINGS_MODULE"] = "promptpilot.settings"
os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
os.environ.setdefault("PROMPTPILOT_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402

from bench.runtime import ensure_database, git_code  # noqa: E402
from workflows.pages.executions import HTMX_STOP_POLLING, POLL_SECONDS  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- services


def claim_broker() -> None:
    """Refuse the suites' Redis databases and a second run of this script; flush ours."""
    import redis

    url = os.environ["CELERY_BROKER_URL"]
    if not url.startswith("redis://") or re.search(r"/(7|8|9|1[0-5])$", url):
        raise SystemExit(f"Give the benchmark a Redis database of its own (7-15 are the suites' and the "
                         f"other benches'): {url!r}.")
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    if not client.set(OWNER_KEY, f"pid {os.getpid()}", nx=True, ex=OWNER_TTL_SECONDS):
        raise SystemExit(f"Another bench/live_page.py uses {url} (key {OWNER_KEY!r} expires by itself).")
    for key in client.scan_iter():
        if key != OWNER_KEY.encode():
            client.delete(key)


def release_broker() -> None:
    import redis

    with contextlib.suppress(Exception):
        redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_connect_timeout=2).flushdb()


class Service:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name}: no {what} within {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the process we started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def start_services(log_dir: Path, port: int) -> list[Service]:
    python = sys.executable
    worker = Service("worker", [python, "-m", "celery", "-A", "promptpilot", "worker", "-l", "info",
                                "-n", f"live-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
                                "--without-heartbeat"], log_dir)
    web = Service("web", [python, "-m", "gunicorn", "promptpilot.wsgi", "--bind", f"127.0.0.1:{port}",
                          "--workers", "2", "--threads", "4", "--no-control-socket"], log_dir)
    services = [worker, web]
    try:
        worker.wait_for(lambda: "ready." in worker.tail(), 90, "'ready.'")

        def web_up() -> bool:
            with contextlib.suppress(Exception):
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
            return False

        web.wait_for(web_up, 60, "answer on /healthz")
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

    ensure_database()
    user, workflow = bench_workflow(args.steps, args.delay_ms)
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    print(f"logs: {log_dir}", flush=True)
    claim_broker()
    services: list[Service] = []
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
        release_broker()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": git_code(),
        "load_1min": os.getloadavg()[0],
        "runs": args.runs, "steps": args.steps, "delay_ms": args.delay_ms, "poll_seconds": POLL_SECONDS,
        "samples": len(latencies),
        "latency_s": {"p50": statistics.median(latencies), "p95": percentile(latencies, 0.95),
                      "min": min(latencies), "max": max(latencies)},
        "partial_ms": {"p50": statistics.median(responses) * 1000, "p95": percentile(responses, 0.95) * 1000},
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
    print(f"\n{result['date']} · {result['code']} · load {result['load_1min']:.1f}")
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
