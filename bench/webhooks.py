"""Webhook benchmark: signed deliveries per second against gunicorn, beside a trivial view.

    python bench/webhooks.py [--duration 12] [--rounds 3] [--connections 32] [--procs 4] [--workers 4]

Starts gunicorn (``promptpilot.wsgi``, sync workers) with ``bench.webhooks_settings`` on
its own PostgreSQL database (``benchhooks``) and Redis database (7, the Celery broker;
flushed at start and end). No Celery worker runs: accepted deliveries are enqueued, not
run. For each of the trivial JSON view (``/bench/trivial``) and signed Standard Webhooks
deliveries (unique ``webhook-id``, fresh timestamp, valid signature over the exact body),
and, as a reference that is not PromptPilot, the issue's "straightforward chain" view
(``/bench/straightforward``: verify, one INSERT, ``send_task``; see webhooks_urls.py),
it runs a fixed-duration load with N concurrent connections from a few client processes
and reports requests/s, p50/p99 latency and status codes; then checks that every 202 has
an ACCEPTED TriggerInvocation and a PENDING execution in the database. See bench/README.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/benchhooks"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/7"
GOAL_RATIO = 0.35
GOAL_P99_MS = 100.0
HOST = "127.0.0.1"


def _configure_env() -> None:
    from bench.common import configure_env

    configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL,
                  settings_module="bench.webhooks_settings")


# --------------------------------------------------------------------------- load client
# (module level and Django-free, so multiprocessing children do not set Django up)


def _thread_load(port, requests, start_at, stop_at, out):
    """Send ``requests`` (path, body, headers) one after another on one connection until
    ``stop_at``; record (latency ms, status) of each response that finished in the window."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    latencies, statuses, errors = [], Counter(), Counter()
    index = 0
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        now = time.time()
        if now >= stop_at:
            break
        if index >= len(requests):
            errors["ran out of precomputed requests"] += 1
            break
        method, path, body, headers = requests[index]
        index += 1
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.getheader("connection", "").lower() == "close":
                conn.close()  # gunicorn's sync workers close after every response
        except (OSError, http.client.HTTPException) as exc:
            errors[type(exc).__name__] += 1
            conn.close()
            continue
        elapsed = (time.perf_counter() - t0) * 1000
        if time.time() <= stop_at:
            latencies.append(elapsed)
            statuses[status] += 1
        elif status == 202:
            statuses["202 after window"] += 1  # still accepted: counts for durability
    conn.close()
    out.append((latencies, statuses, errors, index))


def _make_requests(kind, count, trigger_id, secret, tag):
    if kind == "trivial":
        return [("GET", "/bench/trivial", None, {"Host": "localhost"})] * count
    from triggers.services.webhooks import webhook_signature  # pure function, no database

    path = {"straightforward": "/bench/straightforward", "nopublish": "/bench/straightforward-nopublish"}.get(
        kind, f"/api/webhooks/{trigger_id}")
    timestamp = str(int(time.time()))
    requests = []
    for n in range(count):
        msg_id = f"msg_{tag}_{n}_{uuid.uuid4().hex[:12]}"
        body = json.dumps({"customer": f"c-{tag}-{n}", "amount": n, "order": {"id": msg_id}}).encode()
        requests.append(("POST", path, body, {
            "Host": "localhost",
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": webhook_signature(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body),
        }))
    return requests


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: terminate() must just end us


def _process_load(args):
    """One client process: precompute its requests, then ``threads`` connections."""
    kind, port, threads, per_thread, start_at, duration, trigger_id, secret, tag = args
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    if kind != "trivial":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.webhooks_settings")
        import django

        django.setup()
    plans = [_make_requests(kind, per_thread, trigger_id, secret, f"{tag}t{i}") for i in range(threads)]
    out: list = []
    workers = [threading.Thread(target=_thread_load, args=(port, plan, start_at, start_at + duration, out))
               for plan in plans]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=duration + 30)
    latencies, statuses, errors, sent = [], Counter(), Counter(), 0
    for lat, st, err, n in out:
        latencies.extend(lat)
        statuses.update(st)
        errors.update(err)
        sent += n
    return latencies, dict(statuses), dict(errors), sent


def run_load(pool, kind, *, port, connections, procs, duration, trigger_id="", secret="", per_thread, tag):
    threads = max(1, connections // procs)
    # Precomputing (signing) happens before start_at, outside the timed window.
    start_at = time.time() + (1.0 if kind == "trivial" else 3.0) + per_thread * threads * 0.00005
    jobs = [(kind, port, threads, per_thread, start_at, duration, trigger_id, secret, f"{tag}p{i}")
            for i in range(procs)]
    result = pool.map_async(_process_load, jobs)
    parts = result.get(timeout=duration + 120)
    latencies, statuses, errors = [], Counter(), Counter()
    for lat, st, err, _ in parts:
        latencies.extend(lat)
        statuses.update(st)
        errors.update(err)
    return {"kind": kind, "latencies": latencies, "statuses": statuses, "errors": errors, "duration": duration,
            "connections": threads * procs}


def cpu_seconds() -> Counter:
    """CPU seconds used so far by this machine's processes, by kind: gunicorn, postgres, redis, client."""
    hz = os.sysconf("SC_CLK_TCK")
    used: Counter = Counter()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = next((k for k, marker in (("gunicorn", "gunicorn"), ("postgres", "postgres"),
                                         ("redis", "redis-server"), ("client", "webhooks.py")) if marker in cmdline),
                    "other")
        used[kind] += (int(fields[11]) + int(fields[12])) / hz
    return used


def merged(runs):
    """One result for several timed runs of the same target."""
    latencies, statuses, errors = [], Counter(), Counter()
    for run in runs:
        latencies.extend(run["latencies"])
        statuses.update(run["statuses"])
        errors.update(run["errors"])
    return {"kind": runs[0]["kind"], "latencies": latencies, "statuses": statuses, "errors": errors,
            "duration": sum(run["duration"] for run in runs), "connections": runs[0]["connections"]}


def summary(result):
    lat = sorted(result["latencies"])

    def pct(q):
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] if lat else float("nan")

    return {
        "rps": len(lat) / result["duration"],
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": pct(0.99),
        "max": lat[-1] if lat else float("nan"),
        "n": len(lat),
        "statuses": {str(k): v for k, v in sorted(result["statuses"].items(), key=lambda kv: str(kv[0]))},
        "errors": dict(result["errors"]),
        "connections": result["connections"],
    }


# --------------------------------------------------------------------------- server side


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def ensure_database():
    import django
    from django.db import connection

    from bench.common import ensure_database

    django.setup()
    ensure_database()
    return connection


def redis_client():
    from bench.common import ensure_broker, redis_client

    ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/webhooks.py")
    return redis_client(socket_timeout=10)


OWNER_KEY = "promptpilot-bench-webhooks:owner"
OWNER_TTL_SECONDS = 1200


def setup_trigger():
    from django.contrib.auth import get_user_model

    from triggers.services.triggers import trigger_create
    from workflows.models import Workflow, WorkflowStep, WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username="bench-webhooks")
    workflow = Workflow.objects.create(owner=user, name=f"bench webhooks {datetime.now(UTC):%H:%M:%S}")
    WorkflowVariable.objects.create(workflow=workflow, name="customer", type="STRING", required=True)
    WorkflowStep.objects.create(workflow=workflow, order=1, name="greet", type="TRANSFORM",
                                config={"template": "Hello {{ input.customer }}"})
    workflow_version_create(workflow=workflow, note="bench/webhooks.py")
    trigger, secret = trigger_create(owner=user, workflow=workflow.pk, type="WEBHOOK", name="bench", config={})
    assert secret and secret.startswith("whsec_")
    return trigger, secret


def setup_straightforward_table(connection) -> None:
    """The reference view's table (bench/webhooks_urls.py), emptied for this run."""
    from bench.webhooks_urls import STRAIGHTFORWARD_TABLE

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {STRAIGHTFORWARD_TABLE} (id uuid PRIMARY KEY, "
                       "webhook_id text NOT NULL, payload jsonb NOT NULL, received_at timestamptz DEFAULT now())")
        cursor.execute(f"TRUNCATE {STRAIGHTFORWARD_TABLE}")


def queued_starts(broker) -> tuple[int, Counter]:
    """Runs named by the start messages waiting in the broker (``workflows.advance_execution``
    names one, ``workflows.advance_executions`` a batch: workflows/services/relay.py), and
    the messages by kind (the reference view's are counted apart)."""
    import base64

    runs, messages = set(), Counter()
    for raw in broker.lrange("celery", 0, -1):
        message = json.loads(raw)
        task = message["headers"]["task"]
        args = json.loads(base64.b64decode(message["body"]))[0]
        if task == "workflows.advance_executions":
            runs.update(args[0])
            messages["start"] += 1
        elif task == "workflows.advance_execution":
            runs.add(args[0])
            messages["start"] += 1
        else:
            messages["reference"] += 1
    return len(runs), messages


class Gunicorn:
    def __init__(self, port: int, workers: int):
        self.log_dir = tempfile.mkdtemp(prefix="bench-webhooks-")
        self.log = open(Path(self.log_dir) / "gunicorn.log", "wb")
        cmd = [str(Path(sys.executable).parent / "gunicorn"), "promptpilot.wsgi", "--workers", str(workers),
               "--threads", "1", "-b", f"{HOST}:{port}", "--log-level", "warning", "--timeout", "30"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=os.environ.copy(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        print(f"gunicorn pid {self.proc.pid}: {' '.join(cmd[1:])} (log in {self.log_dir})", flush=True)

    def wait_ready(self, port: int, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited ({self.proc.returncode}); see {self.log_dir}/gunicorn.log")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=2)
                conn.request("GET", "/bench/trivial", headers={"Host": "localhost"})
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn not ready within {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: gunicorn and its workers
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=12.0,
                        help="seconds of timed load per target, split over the rounds (default 12)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds: each measures every target once (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per target (default 3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--procs", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--per-thread", type=int, default=None,
                        help="signed requests precomputed per connection and run (default: 400 per second of run)")
    parser.add_argument("--json", help="also write the figures as JSON to this file")
    args = parser.parse_args()

    _configure_env()
    connection = ensure_database()
    from bench.common import machine

    info = machine()
    broker = redis_client()
    broker.flushdb()  # our own database number only
    trigger, secret = setup_trigger()
    setup_straightforward_table(connection)
    os.environ["BENCH_WEBHOOK_SECRET"] = secret  # for the straightforward reference view in gunicorn
    connection.close()  # gunicorn workers must not inherit it (they are separate processes anyway)

    port = free_port()
    server = Gunicorn(port, args.workers)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(args.procs, initializer=_ignore_sigint)  # Ctrl-C is the parent's to handle
    rounds: dict[str, list] = {"trivial": [], "straightforward": [], "nopublish": [], "webhook": []}
    cpu: dict[str, Counter] = {kind: Counter() for kind in rounds}
    accepted_total = 0
    try:
        server.wait_ready(port)
        print(f"Machine: {info}", flush=True)
        kinds = ("trivial", "straightforward", "nopublish", "webhook")
        common = dict(port=port, connections=args.connections, procs=args.procs, trigger_id=str(trigger.pk),
                      secret=secret, per_thread=args.per_thread or int(400 * max(args.warmup, args.duration / args.rounds)) + 1)

        def accepted(run):
            return sum(run["statuses"].get(key, 0) for key in (202, "202 after window"))

        for kind in kinds:
            warm = run_load(pool, kind, duration=args.warmup, tag=f"w{kind[0]}", **common)
            accepted_total += accepted(warm) if kind == "webhook" else 0
        # Interleaved rounds: every target is measured in each round, so a machine that
        # speeds up or slows down during the run weighs on all of them alike.
        for number in range(1, args.rounds + 1):
            for kind in kinds:
                before = cpu_seconds()
                timed = run_load(pool, kind, duration=args.duration / args.rounds, tag=f"t{kind[0]}{number}",
                                 **common)
                # Includes the run's set-up (signing requests) in the client's share.
                cpu[kind].update(cpu_seconds() - before)
                accepted_total += accepted(timed) if kind == "webhook" else 0
                rounds[kind].append(timed)
                s = summary(timed)
                print(f"round {number} {kind:15s} {s['rps']:8.1f} req/s  p50 {s['p50']:6.1f} ms  "
                      f"p99 {s['p99']:6.1f} ms  statuses {s['statuses']}  errors {s['errors']}", flush=True)
        results = {kind: summary(merged(runs)) for kind, runs in rounds.items()}
    except KeyboardInterrupt:
        print("Interrupted.", flush=True)
        pool.terminate()
        server.stop()
        broker.flushdb()
        return 130
    finally:
        pool.terminate()
        pool.join()
        server.stop()

    from django.db import connection as conn

    from triggers.models import InvocationStatus, TriggerInvocation
    from workflows.models import WorkflowExecution

    conn.close()
    invocations = Counter(TriggerInvocation.objects.filter(trigger=trigger).values_list("status", flat=True))
    pending = WorkflowExecution.objects.filter(trigger=trigger, status="PENDING").count()
    executions = WorkflowExecution.objects.filter(trigger=trigger).count()
    queued, messages = queued_starts(broker)
    broker.flushdb()

    trivial, hook, plain = results["trivial"], results["webhook"], results["straightforward"]
    nopublish = results["nopublish"]
    nopublish_ratio = nopublish["rps"] / trivial["rps"] if trivial["rps"] else float("nan")
    ratio = hook["rps"] / trivial["rps"] if trivial["rps"] else float("nan")
    plain_ratio = plain["rps"] / trivial["rps"] if trivial["rps"] else float("nan")
    all_202 = set(hook["statuses"]) <= {"202", "202 after window"} and not hook["errors"]
    durable = invocations.get(InvocationStatus.ACCEPTED, 0) == accepted_total == pending == executions == queued
    print()
    print(f"date {info['date']}, {info['cpus']} CPUs ({info['cpu']}), load {info['load avg 1/5 min']}, "
          f"Python {info['python']}, PostgreSQL {info['postgres']}, code {info['code']}")
    print(f"gunicorn {args.workers} sync workers; client {args.procs} processes x "
          f"{args.connections // args.procs} connections on the same machine; {args.duration:.0f} s per target "
          f"in {args.rounds} interleaved rounds")
    print("| target | req/s | p50 ms | p99 ms | max ms | statuses |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, s in (("trivial JSON view", trivial), ("straightforward chain (reference, not PromptPilot)", plain),
                    ("straightforward chain without its publish (upper bound, not PromptPilot)", nopublish),
                    ("signed webhook delivery", hook)):
        print(f"| {name} | {s['rps']:.0f} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} | {s['statuses']} |")
    print("CPU per request in ms, by process (client includes signing the requests before each run):")
    for name, kind in (("trivial", "trivial"), ("straightforward", "straightforward"), ("no publish", "nopublish"),
                       ("webhook", "webhook")):
        served = results[kind]["n"] or 1
        print(f"  {name:16s} " + "  ".join(f"{group} {cpu[kind][group] * 1000 / served:.2f}"
                                           for group in ("gunicorn", "postgres", "redis", "client")))
    print(f"ratio straightforward chain/trivial: {plain_ratio:.2f}x (the issue's estimate: 0.25x); "
          f"without its publish: {nopublish_ratio:.2f}x")
    per_round = [summary(hook_run)["rps"] / summary(trivial_run)["rps"]
                 for hook_run, trivial_run in zip(rounds["webhook"], rounds["trivial"], strict=True)]
    print(f"ratio webhook/trivial: {ratio:.2f}x (goal >= {GOAL_RATIO}x: {'met' if ratio >= GOAL_RATIO else 'NOT met'}); "
          f"by round: {', '.join(f'{r:.2f}x' for r in per_round)}")
    print(f"webhook p99: {hook['p99']:.1f} ms (goal < {GOAL_P99_MS:.0f} ms: "
          f"{'met' if hook['p99'] < GOAL_P99_MS else 'NOT met'})")
    print(f"all webhook answers 202: {all_202}")
    print(f"durability: 202s (warm-up + timed) {accepted_total}; invocations {dict(invocations)}; executions "
          f"{executions} of which PENDING {pending}; runs in the broker's start messages {queued} "
          f"(in {messages['start']} messages; reference view messages {messages['reference']}): "
          f"{'OK' if durable else 'MISMATCH'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "results": results, "ratio": ratio,
                                               "ratio_by_round": per_round,
                                               "straightforward_ratio": plain_ratio,
                                               "straightforward_nopublish_ratio": nopublish_ratio,
                                               "accepted": accepted_total, "invocations": dict(invocations),
                                               "pending": pending, "queued": queued}, indent=2))
    return 0 if durable and all_202 else 1


if __name__ == "__main__":
    sys.exit(main())
