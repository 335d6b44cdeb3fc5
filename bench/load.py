"""Load benchmark: sustained mixed load on gunicorn + the default worker, with logs and metrics on and off.

    python bench/load.py [--duration 60] [--rate 20] [--delay 1.0] [--rounds 1] [--no-instant] [--json FILE]

Starts gunicorn (``promptpilot.wsgi``, 3 sync workers x 4 threads as in docker-compose.yml)
and one worker with the contract command (``celery -A promptpilot worker -l info``) on
PostgreSQL (database ``bench_load``) and Redis (database 2, flushed), beside the fake
OpenAI server of bench/runtime.py. The bench workflow has two PROMPT steps on the
``openai`` provider (the official SDK over HTTP); the fake server answers each call after
``--delay`` seconds.

For ``--duration`` seconds the client sends, at a fixed rate (open loop: a slow answer does
not slow the arrivals), a mix of signed webhook deliveries (Standard Webhooks), API
executes (knox token) and API previews (which call the model in the web process). Each
run's end-to-end latency is its submission (just before the request) to the
``completed_at`` the worker wrote.

Every configuration is measured twice in the same run, interleaved (on, off, then off, on
in the next round): "on" is production's shape (INFO logs as JSON lines, the access log,
``PROMETHEUS_MULTIPROC_DIR``); "off" is ``PROMPTPILOT_LOG_LEVEL=WARNING``, worker ``-l
warning``, no access log and ``PROMPTPILOT_METRICS_ENABLED=false``. The overhead of logs and
metrics = the CPU gunicorn and the worker spend per request, on against off (the offered
load is the same, so throughput only differs if a side could not keep up). See the "Load"
section of bench/README.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, runtime  # noqa: E402  (runtime: its fake OpenAI server and /proc helpers)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_load"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/2"
APP_NAME = "promptpilot-bench-load"
OWNER_KEY = "promptpilot-bench-load:owner"
OWNER_TTL_SECONDS = 3600
ADVISORY_LOCK = 0x70705F6C6F616421  # "pp_load!"
HOST = "127.0.0.1"
BENCH_USER = "bench-load"
WORKFLOW_NAME = "bench: 2 openai steps (load)"
MODEL = "gpt-4o-mini"
GOAL_OVERHEAD = 0.10
KINDS = ("webhook", "execute", "preview")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


# --------------------------------------------------------------------------- set-up


def setup_workflow():
    """The bench user, a workflow of two PROMPT steps, its webhook trigger and an API token."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from triggers.services.triggers import trigger_create
    from workflows.models import Workflow, WorkflowStep, WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    workflow = Workflow.objects.create(owner=user, name=WORKFLOW_NAME)
    WorkflowVariable.objects.create(workflow=workflow, name="customer", type="STRING", required=True,
                                    sample="ada")
    model = {"provider": "openai", "model": MODEL}
    WorkflowStep.objects.create(workflow=workflow, order=1, name="summary", type="PROMPT",
                                config={"template": "Summarise the order of {{ input.customer }}.", "model": model})
    WorkflowStep.objects.create(workflow=workflow, order=2, name="reply", type="PROMPT",
                                config={"template": "Write a reply to {{ input.customer }} about: "
                                                    "{{ steps.summary.output }}", "model": model})
    workflow_version_create(workflow=workflow, note="bench/load.py")
    trigger, secret = trigger_create(owner=user, workflow=workflow.pk, type="WEBHOOK", name="bench load", config={})
    _, token = AuthToken.objects.create(user)
    return workflow, trigger, secret, token


class Requests:
    """The requests of the mix, built just before they are sent (fresh webhook timestamps)."""

    def __init__(self, workflow_id: int, trigger_id: str, secret: str, token: str) -> None:
        self.workflow_id, self.trigger_id, self.secret, self.token = workflow_id, trigger_id, secret, token

    def build(self, kind: str, tag: str) -> tuple[str, bytes, dict]:
        from triggers.services.webhooks import webhook_signature  # a pure function

        if kind == "webhook":
            msg_id = f"msg_{tag}_{uuid.uuid4().hex[:12]}"
            body = json.dumps({"customer": f"c-{tag}", "amount": 42, "order": {"id": msg_id}}).encode()
            timestamp = str(int(time.time()))
            return f"/api/webhooks/{self.trigger_id}", body, {
                "Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": timestamp,
                "webhook-signature": webhook_signature(secret=self.secret, msg_id=msg_id, timestamp=timestamp,
                                                       body=body)}
        body = json.dumps({"input": {"customer": f"c-{tag}"}}).encode()
        return f"/api/workflows/{self.workflow_id}/{kind}", body, {
            "Content-Type": "application/json", "Authorization": f"Token {self.token}"}


def schedule(rate: float, duration: float, mix: dict[str, float]) -> list[tuple[float, str]]:
    """(offset in seconds, kind) of every request: evenly spaced arrivals, the kinds spread
    by their weights (the kind furthest behind its share goes next)."""
    total = sum(mix.values())
    sent: Counter = Counter()
    plan = []
    for index in range(int(rate * duration)):
        kind = max(mix, key=lambda k: mix[k] / total * (index + 1) - sent[k])
        sent[kind] += 1
        plan.append((index / rate, kind))
    return plan


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


MODES = {  # mode: (logs, metrics)
    "on": (True, True), "off": (False, False), "logs": (True, False), "metrics": (False, True)}


def mode_env(mode: str, fake_url: str, metrics_dir: Path) -> dict[str, str]:
    logs, metrics = MODES[mode]
    env = common.child_env(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=f"{fake_url}/v1", PROMPTPILOT_LOG_FORMAT="json",
                           PROMPTPILOT_LOG_LEVEL="INFO" if logs else "WARNING",
                           PROMPTPILOT_METRICS_ENABLED="true" if metrics else "false")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if metrics:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return env


class Gunicorn(common.ChildProcess):
    label = "gunicorn"

    def __init__(self, mode: str, port: int, log_dir: Path, env: dict[str, str], tag: str) -> None:
        argv = [str(Path(sys.executable).parent / "gunicorn"), "promptpilot.wsgi", "--bind", f"{HOST}:{port}",
                "--workers", "3", "--threads", "4", "--no-control-socket"]
        if MODES[mode][0]:
            argv += ["--access-logfile", "-"]
        super().__init__(argv, log_dir / f"gunicorn-{tag}.log", env)


class Worker(common.ChildProcess):
    label = "worker"

    def __init__(self, mode: str, log_dir: Path, env: dict[str, str], tag: str) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "promptpilot", "worker", "-l",
                "info" if MODES[mode][0] else "warning", "-n", f"load-{os.getpid()}-{tag}@%h"]
        super().__init__(argv, log_dir / f"worker-{tag}.log", env)


# --------------------------------------------------------------------------- the client


class Client:
    """Sends planned requests from a thread pool, a new connection for each (as webhook
    senders do; a kept-alive connection that gunicorn closed while idle would fail)."""

    def __init__(self, port: int, requests: Requests, threads: int) -> None:
        self.port, self.requests = port, requests
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load")

    def send(self, kind: str, tag: str) -> dict:
        path, body, headers = self.requests.build(kind, tag)
        headers.update(Host="localhost", Connection="close")
        submitted = time.time()
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return {"kind": kind, "submitted": submitted, "status": type(exc).__name__, "ms": None, "run": None}
        finally:
            conn.close()
        result = {"kind": kind, "submitted": submitted, "status": response.status,
                  "ms": (time.perf_counter() - t0) * 1000, "run": None}
        if response.status == 202:
            payload = json.loads(data)
            result["run"] = payload.get("execution_id") or payload.get("id")
        elif kind == "preview" and response.status == 200:
            result["preview_status"] = json.loads(data).get("status")
        return result

    def run(self, plan: list[tuple[float, str]], label: str) -> list[dict]:
        start = time.monotonic() + 0.5
        futures = []
        for index, (offset, kind) in enumerate(plan):
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self.pool.submit(self.send, kind, f"{label}-{index}"))
        return [f.result(timeout=120) for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- a round


def app_cpu_seconds(*groups: common.ChildProcess) -> float:
    table = runtime.proc_table()
    return sum(runtime.group_usage(table, child.pgid)["cpu_ticks"] for child in groups) / runtime.TICKS


def wait_finished(ids: list[str], *, timeout: float, check) -> dict[str, tuple[str, float | None]]:
    """{run id: (status, completed_at as a timestamp)} once every run has finished (or the timeout)."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id::text, status, extract(epoch FROM completed_at) FROM workflow_executions "
                           "WHERE id = ANY(%s::uuid[])", [ids])
            rows = {run: (status, float(done) if done is not None else None) for run, status, done in cursor}
        if all(rows.get(run, ("", None))[0] in FINISHED for run in ids) or time.monotonic() > deadline:
            return rows
        check()
        time.sleep(0.5)


def measure(args, mode: str, delay: float, label: str, *, fake, requests: Requests, log_dir: Path,
            duration: float) -> dict:
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=log_dir))
    env = mode_env(mode, fake.url, metrics_dir)
    port = free_port()
    fake.reset(delay)
    web = Gunicorn(mode, port, log_dir, env, label)
    worker = Worker(mode, log_dir, env, label)
    client = Client(port, requests, threads=args.threads)

    def check():
        web.check_alive()
        worker.check_alive()

    try:
        # Ready when one run submitted over HTTP has completed: web, broker, worker and model.
        def warm() -> bool:
            check()
            results = client.run([(0, "execute"), (0, "webhook")], f"{label}-ready-{time.time():.0f}")
            ids = [r["run"] for r in results if r["run"]]
            return len(ids) == 2 and all(s == "COMPLETED" for s, _ in
                                         wait_finished(ids, timeout=60, check=check).values())

        common.wait_until(lambda: _quietly(warm), timeout=180, interval=1, what=f"{label}: web and worker ready")
        client.run(schedule(args.rate, min(3.0, duration), args.mix), f"{label}-warm")  # imports, pools, clients
        time.sleep(2 * delay + 1)
        cpu_before = app_cpu_seconds(web, worker)
        results = client.run(schedule(args.rate, duration, args.mix), label)
        ids = [r["run"] for r in results if r["run"]]
        finished = wait_finished(ids, timeout=args.drain_timeout, check=check)
        cpu = app_cpu_seconds(web, worker) - cpu_before
    finally:
        client.close()
        web.stop()
        worker.stop()
    return summarise(mode, delay, label, results, finished, duration, cpu)


def _quietly(predicate):
    try:
        return predicate()
    except (OSError, ValueError, TimeoutError, http.client.HTTPException):
        return False


def summarise(mode, delay, label, results, finished, window, cpu) -> dict:
    """Per kind: answers per second of the load ``window`` (the offered rate when every
    request succeeds), HTTP latency, and the runs' end-to-end latency and final status."""
    by_kind = {}
    for kind in KINDS:
        mine = [r for r in results if r["kind"] == kind]
        ok = [r for r in mine if r["status"] == (200 if kind == "preview" else 202)]
        runs = [r for r in mine if r["run"]]
        e2e = [finished[r["run"]][1] - r["submitted"] for r in runs
               if finished.get(r["run"], ("", None))[0] == "COMPLETED" and finished[r["run"]][1] is not None]
        by_kind[kind] = {
            "sent": len(mine), "ok": len(ok), "per_s": len(ok) / window,
            "statuses": dict(Counter(str(r["status"]) for r in mine)),
            "http_p50_ms": common.p50([r["ms"] for r in ok]), "http_p99_ms": common.percentile([r["ms"] for r in ok], 0.99),
            "runs": len(runs), "completed": len(e2e),
            "e2e_p50_s": common.p50(e2e), "e2e_p99_s": common.percentile(e2e, 0.99),
            "run_statuses": dict(Counter(finished.get(r["run"], ("missing", None))[0] for r in runs)),
            "preview_statuses": dict(Counter(r.get("preview_status") for r in ok)) if kind == "preview" else {},
        }
    all_e2e = [finished[r["run"]][1] - r["submitted"] for r in results
               if r["run"] and finished.get(r["run"], ("", None))[0] == "COMPLETED"]
    done = [finished[r["run"]][1] for r in results if r["run"] and finished.get(r["run"], ("", None))[1]]
    first = min(r["submitted"] for r in results)
    answered = sum(k["ok"] for k in by_kind.values())  # the CPU is shared out over the requests served
    errors = sum(k["sent"] - k["ok"] for k in by_kind.values()) + sum(
        k["runs"] - k["completed"] for k in by_kind.values()) + sum(
        n for status, n in by_kind["preview"]["preview_statuses"].items() if status != "COMPLETED")
    return {"mode": mode, "delay": delay, "label": label, "window_s": window, "kinds": by_kind,
            "requests": len(results), "runs_completed": len(all_e2e),
            "runs_per_s": len(done) / (max(done) - first) if done else 0.0,
            "e2e_p50_s": common.p50(all_e2e), "e2e_p99_s": common.percentile(all_e2e, 0.99),
            "errors": errors, "answered": answered, "app_cpu_s": cpu,
            "cpu_ms_per_request": cpu * 1000 / max(1, answered)}


def print_round(r: dict) -> None:
    kinds = "  ".join(f"{kind} {k['per_s']:.1f}/s" + (f" e2e p50 {k['e2e_p50_s']:.2f} s p99 {k['e2e_p99_s']:.2f} s"
                                                      if k["runs"] else f" p50 {k['http_p50_ms']:.0f} ms")
                      for kind, k in r["kinds"].items())
    print(f"{r['label']:>12} delay {r['delay']:.1f} s {r['mode']:>3}: {kinds}  runs/s {r['runs_per_s']:.1f}  "
          f"errors {r['errors']}  app CPU {r['cpu_ms_per_request']:.1f} ms/request", flush=True)
    if r["errors"]:
        print("   statuses: " + "; ".join(f"{kind} {k['statuses']} runs {k['run_statuses']} {k['preview_statuses']}"
                                        for kind, k in r["kinds"].items()), flush=True)


# --------------------------------------------------------------------------- main


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind.strip() not in KINDS or not weight:
            raise argparse.ArgumentTypeError(f"--mix takes kind=weight for {', '.join(KINDS)}; got {part!r}")
        mix[kind.strip()] = float(weight)
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per measurement (default 60)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second, all kinds (default 20)")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("webhook=45,execute=45,preview=10"),
                        help="weights of the kinds (default webhook=45,execute=45,preview=10)")
    parser.add_argument("--delay", type=float, default=1.0, help="the fake model's answer delay (default 1.0 s)")
    parser.add_argument("--no-instant", action="store_true", help="skip the rounds with a model that answers at once")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds per delay; each measures on and off once, alternating who goes first (default 1)")
    parser.add_argument("--split", action="store_true",
                        help="also measure logs alone and metrics alone in every round (which of the two costs what)")
    parser.add_argument("--threads", type=int, default=64, help="client threads (default 64)")
    parser.add_argument("--drain-timeout", type=float, default=180.0,
                        help="seconds to wait for the runs submitted to finish (default 180)")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)

    common.configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL, app_name=APP_NAME)
    import django

    django.setup()
    common.ensure_database()
    common.claim_database(ADVISORY_LOCK, "bench/load.py")
    common.ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/load.py")

    import openai

    info = common.machine(openai=openai.__version__)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    print(f"Logs in {log_dir}", flush=True)
    workflow, trigger, secret, token = setup_workflow()
    requests = Requests(workflow.pk, str(trigger.pk), secret, token)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    fake = runtime.FakeServer(log_dir)
    rounds = []
    try:
        for delay in [args.delay] + ([] if args.no_instant or args.delay == 0 else [0.0]):
            for number in range(1, args.rounds + 1):
                order = ("on", "off", "logs", "metrics") if args.split else ("on", "off")
                order = order if number % 2 else order[::-1]
                for mode in order:
                    label = f"d{delay:g}-r{number}-{mode}"
                    result = measure(args, mode, delay, label, fake=fake, requests=requests, log_dir=log_dir,
                                     duration=args.duration)
                    print_round(result)
                    rounds.append(result)
                    common.flush_broker()
                    common.redis_client().set(OWNER_KEY, f"pid {os.getpid()}", ex=OWNER_TTL_SECONDS)
    except KeyboardInterrupt:
        print("Interrupted.", flush=True)
        return 130
    finally:
        fake.stop()
        common.flush_broker()
    return report(args, info, rounds)


MODE_NAMES = {"on": "on", "off": "off", "logs": "logs only", "metrics": "metrics only"}


def cpu_per_request(rounds: list[dict], delay: float, mode: str) -> float:
    chosen = [r for r in rounds if r["delay"] == delay and r["mode"] == mode]
    return sum(r["app_cpu_s"] for r in chosen) / max(1, sum(r["answered"] for r in chosen))


def cost(rounds: list[dict], delay: float, mode: str) -> float:
    """Extra app CPU per request of ``mode`` over "off" (all rounds of each added up)."""
    off = cpu_per_request(rounds, delay, "off")
    return cpu_per_request(rounds, delay, mode) / off - 1 if off else float("nan")


def report(args, info: dict, rounds: list[dict]) -> int:
    print()
    print(f"date {info['date']}, {info['cpus']} CPUs ({info['cpu']}), {info['memory']}, load "
          f"{info['load avg 1/5 min']}, PostgreSQL {info['postgres']}, Redis {info['redis']}, code {info['code']}")
    mix = ", ".join(f"{k} {w:g}" for k, w in args.mix.items())
    print(f"offered {args.rate:g} requests/s for {args.duration:g} s per measurement ({mix}); gunicorn 3 x 4 "
          f"threads; 1 worker (contract command); 2 PROMPT steps on openai")
    print("| model delay | logs+metrics | webhooks/s | executes/s | previews/s | runs/s | run p50 s | run p99 s "
          "| preview p50 ms | errors | app CPU ms/request |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rounds:
        k = r["kinds"]
        print(f"| {r['delay']:g} s | {MODE_NAMES[r['mode']]} | {k['webhook']['per_s']:.1f} | {k['execute']['per_s']:.1f} | "
              f"{k['preview']['per_s']:.1f} | {r['runs_per_s']:.1f} | {r['e2e_p50_s']:.2f} | {r['e2e_p99_s']:.2f} | "
              f"{k['preview']['http_p50_ms']:.0f} | {r['errors']} | {r['cpu_ms_per_request']:.1f} |")
    verdicts = []
    for delay, mode in sorted({(r["delay"], r["mode"]) for r in rounds if r["mode"] in ("logs", "metrics")},
                              reverse=True):
        print(f"delay {delay:g} s: {MODE_NAMES[mode]} cost {cost(rounds, delay, mode) * 100:+.1f} % app CPU per request")
    for delay in sorted({r["delay"] for r in rounds}, reverse=True):
        on = [r for r in rounds if r["delay"] == delay and r["mode"] == "on"]
        off = [r for r in rounds if r["delay"] == delay and r["mode"] == "off"]
        overhead = cost(rounds, delay, "on")
        p50_on, p50_off = common.p50([r["e2e_p50_s"] for r in on]), common.p50([r["e2e_p50_s"] for r in off])
        verdicts.append({"delay": delay, "cpu_overhead": overhead, "e2e_p50_on": p50_on, "e2e_p50_off": p50_off})
        print(f"delay {delay:g} s: logs+metrics cost {overhead * 100:+.1f} % app CPU per request "
              f"(goal <= {GOAL_OVERHEAD * 100:.0f} %: {'met' if overhead <= GOAL_OVERHEAD else 'NOT met'}); "
              f"run p50 {p50_on:.2f} s on vs {p50_off:.2f} s off")
    errors = sum(r["errors"] for r in rounds)
    print(f"errors (non-2xx answers, runs not COMPLETED, previews not COMPLETED): {errors}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": {**vars(args), "mix": args.mix},
                                               "rounds": rounds, "verdicts": verdicts}, indent=2, default=str))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
