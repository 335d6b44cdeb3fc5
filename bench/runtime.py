"""Runtime benchmark: N concurrent runs of 3 slow PROMPT steps on one worker with the shipped defaults.

    python bench/runtime.py [--n 200,1000] [--delay 1.0] [--rounds 1] [--timeout 90] [--json FILE]

Each run of the bench workflow makes 3 sequential ``openai`` SDK calls (3 PROMPT steps,
``{"provider": "openai", "model": "gpt-4o-mini"}``) to a local fake OpenAI server that
answers after ``--delay`` seconds. One worker is started with the contract command and
no pool or concurrency flags (``python -m celery -A promptpilot worker -l warning``), on
PostgreSQL + Redis. Rounds (for each N in ``--n``, at ``--delay``; then the largest N
against a server that answers at once, the CPU floor of this machine):

  engine  N runs submitted with ``execution_start`` back to back; wall = first submission
          to the last ``completed_at``; ideal = 3 x delay; peak PostgreSQL connections of
          the bench database (sampled every 50 ms), peak RSS of the worker's processes;
  floor   the same 3 x N calls (sequential within a run, all runs at once) from a plain
          asyncio loop with ``openai.AsyncOpenAI`` against the same server.

The fake server counts the calls per prompt: every prompt of every run must arrive exactly
once. See the "Runtime" section of bench/README.md for the goals.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_runtime"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
APP_NAME = "promptpilot-bench-runtime"  # application_name of this script's own PostgreSQL connections
WORKFLOW_NAME = "bench: 3 openai steps (runtime)"
BENCH_USER = "bench"
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench"
STEPS = 3
GOAL_RATIO = 0.67  # N = 200: ideal / wall
GOAL_WALL_FACTOR = 1.5  # N = 1000: wall <= 1.5 x max(ideal, wall at delay 0)
GOAL_MAX_PG = 40
OWNER_KEY = "promptpilot-bench-runtime:owner"
OWNER_TTL_SECONDS = 1800
ADVISORY_LOCK = 0x70705F72756E746D  # "pp_runtm"
SAMPLE_SECONDS = 0.05
PROC_EVERY = 4  # /proc (RSS, CPU) every 4th sample: 200 ms
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the workload


def step_name(index: int) -> str:
    return f"s{index}"


def step_template(index: int) -> str:
    """Every step reads the run's input (unique per run); steps 2 and 3 the previous output too."""
    if index == 1:
        return "Step 1 of {{ input.x }}: list three facts."
    return f"Step {index} of {{{{ input.x }}}} after [{{{{ steps.{step_name(index - 1)}.output }}}}]: go on."


def prompt_for(index: int, x: str, previous: str | None) -> str:
    """What ``step_template(index)`` renders to (checked against the server's record)."""
    if index == 1:
        return f"Step 1 of {x}: list three facts."
    return f"Step {index} of {x} after [{previous}]: go on."


def answer_for(prompt: str) -> str:
    """The fake model's deterministic answer: short, so prompts do not grow along a run."""
    return "ok " + hashlib.blake2s(prompt.encode(), digest_size=6).hexdigest()


def expected_prompts(x: str) -> tuple[list[str], str]:
    prompts, previous = [], None
    for index in range(1, STEPS + 1):
        prompt = prompt_for(index, x, previous)
        prompts.append(prompt)
        previous = answer_for(prompt)
    return prompts, previous


# --------------------------------------------------------------------------- the fake OpenAI server


def _completion(prompt: str, model: str, number: int) -> dict:
    words = len(prompt.split())
    return {
        "id": f"chatcmpl-bench-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer_for(prompt), "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }],
        "usage": {"prompt_tokens": words, "completion_tokens": 2, "total_tokens": words + 2},
    }


class _ServerState:
    def __init__(self) -> None:
        self.delay = 0.0
        self.reset()
        self.connections = 0

    def reset(self, delay: float | None = None) -> None:
        if delay is not None:
            self.delay = delay
        self.counts: dict[str, int] = {}
        self.calls = 0
        self.bad = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peak_connections = getattr(self, "connections", 0)
        self.first_call = None
        self.last_answer = None

    def stats(self) -> dict:
        return {
            "delay": self.delay, "calls": self.calls, "bad": self.bad, "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight, "connections": self.connections,
            "peak_connections": self.peak_connections, "first_call": self.first_call,
            "last_answer": self.last_answer, "counts": self.counts,
        }


async def _route(state: _ServerState, method: bytes, path: str, body: bytes) -> tuple[int, dict]:
    if method == b"POST" and path == "/v1/chat/completions":
        state.calls += 1
        number = state.calls
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        if state.first_call is None:
            state.first_call = time.time()
        try:
            try:
                request = json.loads(body)
                prompt = request["messages"][-1]["content"]
                model = request.get("model") or MODEL
            except (ValueError, KeyError, IndexError, TypeError):
                state.bad += 1
                return 400, {"error": {"message": "bench server: no messages", "type": "invalid_request_error",
                                       "param": None, "code": None}}
            state.counts[prompt] = state.counts.get(prompt, 0) + 1
            if state.delay > 0:
                await asyncio.sleep(state.delay)
        finally:
            state.in_flight -= 1
        state.last_answer = time.time()
        return 200, _completion(prompt, model, number)
    if method == b"POST" and path == "/_reset":
        state.reset(float(json.loads(body or b"{}").get("delay", state.delay)))
        return 200, {"ok": True}
    if method == b"GET" and path == "/_stats":
        return 200, state.stats()
    return 404, {"error": {"message": f"bench server: no route {path}", "type": "not_found", "param": None,
                           "code": None}}


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 501: b"Not Implemented"}


async def _handle(state: _ServerState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 server side: Content-Length bodies, keep-alive, no pipelining needed."""
    state.connections += 1
    state.peak_connections = max(state.peak_connections, state.connections)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                break
            request_line, _, header_block = head.partition(b"\r\n")
            parts = request_line.split(b" ")
            if len(parts) != 3:
                break
            method, target, version = parts
            keep_alive = version == b"HTTP/1.1"
            length, chunked = 0, False
            for line in header_block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"connection":
                    token = value.strip().lower()
                    keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
                elif name == b"transfer-encoding":
                    chunked = True
            if chunked:
                status, payload, keep_alive = 501, {"error": {"message": "chunked bodies not supported"}}, False
            else:
                try:
                    body = await reader.readexactly(length) if length else b""
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                status, payload = await _route(state, method, target.decode("latin-1").split("?", 1)[0], body)
            data = json.dumps(payload, separators=(",", ":")).encode()
            writer.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                % (status, _REASONS.get(status, b"Error"), len(data),
                   b"" if keep_alive else b"Connection: close\r\n")
                + data
            )
            try:
                await writer.drain()
            except ConnectionError:
                break
            if not keep_alive:
                break
    finally:
        state.connections -= 1
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _serve(host: str, port: int) -> None:
    state = _ServerState()
    server = await asyncio.start_server(lambda r, w: _handle(state, r, w), host, port, backlog=4096,
                                        limit=1 << 20)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class FakeServer:
    """The fake OpenAI server, in a process (and process group) of its own."""

    def __init__(self, log_dir: Path) -> None:
        self._log = (log_dir / "fake-server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-fake", "--port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 100)
                if not chunk:
                    break
                line += chunk
        match = re.match(rb"PORT (\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"The fake OpenAI server did not start (said {line!r}); see {log_dir}/fake-server.log")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=json.dumps(body or {}).encode() if method == "POST" else None,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return json.loads(response.read())
        finally:
            conn.close()

    def reset(self, delay: float) -> None:
        self._call("POST", "/_reset", {"delay": delay})

    def stats(self) -> dict:
        return self._call("GET", "/_stats")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group of the process we started, by its id
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


# --------------------------------------------------------------------------- /proc


def proc_table() -> dict[int, tuple[int, int, int, int]]:
    """{pid: (process group, CPU ticks user+system, RSS pages, threads)} of every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm", "rb") as f:
                rss = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        try:
            table[int(entry)] = (int(fields[2]), int(fields[11]) + int(fields[12]), rss, int(fields[17]))
        except (IndexError, ValueError):
            continue
    return table


def group_usage(table, pgid: int) -> dict:
    members = [v for v in table.values() if v[0] == pgid]
    return {"processes": len(members), "threads": sum(v[3] for v in members),
            "rss": sum(v[2] for v in members) * PAGE, "cpu_ticks": sum(v[1] for v in members)}


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- Django setup


def configure_env() -> None:
    common.configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL, app_name=APP_NAME)


def claim_database() -> None:
    common.claim_database(ADVISORY_LOCK, "bench/runtime.py")


def ensure_broker() -> None:
    common.ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/runtime.py")


def machine() -> dict[str, str]:
    import openai

    return common.machine(openai=openai.__version__)


def shipped_settings() -> dict:
    """The settings this process loads (the worker loads the same ones, with the same environment)."""
    from django.conf import settings

    found = {}
    for name in dir(settings):
        if name.startswith("CELERY_WORKER") or ("POOL" in name and name.isupper()):
            found[name] = getattr(settings, name)
    db = settings.DATABASES["default"]
    found["DATABASES.default"] = {k: db.get(k) for k in ("CONN_MAX_AGE", "CONN_HEALTH_CHECKS", "OPTIONS")}
    for key, value in getattr(settings, "PROMPTPILOT", {}).items():
        if any(word in key for word in ("POOL", "DB_", "CONCURREN", "THREAD", "INLINE")):
            found[f"PROMPTPILOT[{key}]"] = value
    found["environment overrides"] = {k: v for k, v in os.environ.items()
                                      if k.startswith(("PROMPTPILOT_DB_POOL", "PROMPTPILOT_WORKER", "CELERY_WORKER"))}
    return found


def make_workflow():
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow, WorkflowStep, WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    expected = [step_template(index) for index in range(1, STEPS + 1)]
    for candidate in Workflow.objects.filter(owner=user, name=WORKFLOW_NAME).order_by("-id"):
        steps = list(candidate.steps.order_by("order"))
        if ([s.config.get("template") for s in steps] == expected and candidate.is_active
                and not candidate.max_concurrent_executions
                and all(s.config.get("model") == {"provider": "openai", "model": MODEL} for s in steps)):
            return user, candidate
    workflow = Workflow.objects.create(owner=user, name=WORKFLOW_NAME)
    WorkflowVariable.objects.create(workflow=workflow, name="x", type="STRING", required=True)
    for index in range(1, STEPS + 1):
        WorkflowStep.objects.create(
            workflow=workflow, order=index, name=step_name(index), type="PROMPT",
            config={"template": step_template(index), "model": {"provider": "openai", "model": MODEL}},
        )
    workflow_version_create(workflow=workflow, note="bench/runtime.py")
    return user, workflow


# --------------------------------------------------------------------------- worker


class Worker(common.ChildProcess):
    """One worker, started with the contract command and no pool flags, in its own process group."""

    label = "worker"

    def __init__(self, log_dir: Path, fake_url: str, index: int) -> None:
        name = f"runtime-{os.getpid()}-{index}"
        self.nodename = f"{name}@{socket.gethostname()}"
        argv = [sys.executable, "-m", "celery", "-A", "promptpilot", "worker", "-l", "warning",
                "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = common.child_env(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=f"{fake_url}/v1")
        super().__init__(argv, log_dir / f"worker-{index}.log", env)

    def banner(self) -> dict:
        text = self.tail(20000)
        found = {}
        match = re.search(r"concurrency:\s*(\S+)\s*\(([^)]*)\)", text)
        if match:
            found["concurrency"], found["pool"] = match.group(1), match.group(2)
        return found

    def inspect_stats(self) -> dict:
        from promptpilot.celery import app

        try:
            replies = app.control.inspect(destination=[self.nodename], timeout=3).stats() or {}
        except Exception as exc:
            return {"error": str(exc)}
        stats = replies.get(self.nodename) or {}
        pool = stats.get("pool") or {}
        return {k: pool.get(k) for k in ("implementation", "max-concurrency", "processes") if k in pool}


# --------------------------------------------------------------------------- sampler


class Sampler:
    """Every 50 ms: the bench database's connections (pg_stat_activity) split into ours
    (application_name APP_NAME) and the rest (the worker's); every 200 ms: the worker's
    processes from /proc (RSS, threads) and the CPU of the bench database's backends."""

    def __init__(self) -> None:
        from django.db import connection

        self.dbname = connection.settings_dict["NAME"]
        self.conninfo = common.conninfo()
        self.samples: list[tuple] = []  # (t, worker conns, worker busy conns, ours, worker rss or None, threads)
        self.pg_cpu_first: dict[int, int] = {}
        self.pg_cpu_last: dict[int, int] = {}
        self._lock = threading.Lock()
        self.worker: Worker | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runtime-sampler", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                tick = 0
                while not self._stop.wait(SAMPLE_SECONDS):
                    rows = conn.execute(
                        "SELECT pid, application_name, state FROM pg_stat_activity WHERE datname = %s",
                        [self.dbname]).fetchall()
                    mine = sum(1 for _, app, _ in rows if app == APP_NAME)
                    theirs = [(pid, state) for pid, app, state in rows if app != APP_NAME]
                    busy = sum(1 for _, state in theirs if state and state != "idle")
                    rss = threads = None
                    if tick % PROC_EVERY == 0:
                        table = proc_table()
                        worker = self.worker
                        if worker is not None and worker.proc.poll() is None:
                            usage = group_usage(table, worker.pgid)
                            rss, threads = usage["rss"], usage["threads"]
                        with self._lock:
                            for pid, _ in theirs:
                                if pid in table:
                                    self.pg_cpu_first.setdefault(pid, table[pid][1])
                                    self.pg_cpu_last[pid] = table[pid][1]
                    tick += 1
                    self.samples.append((time.time(), len(theirs), busy, mine, rss, threads))
        except Exception as exc:  # reported with the figures; the run goes on
            self.error = f"{type(exc).__name__}: {exc}"

    def pg_cpu_mark(self) -> dict[int, int]:
        with self._lock:
            return dict(self.pg_cpu_last)

    def pg_cpu_since(self, mark: dict[int, int]) -> float:
        """CPU of the bench database's backends (not ours) since ``mark``; a backend seen first
        after the mark counts from its first sample."""
        with self._lock:
            ticks = sum(last - mark.get(pid, self.pg_cpu_first[pid]) for pid, last in self.pg_cpu_last.items())
        return ticks / TICKS

    def window(self, start: float, end: float) -> dict:
        chosen = [s for s in self.samples if start <= s[0] <= end]
        rss = [s[4] for s in chosen if s[4] is not None]
        threads = [s[5] for s in chosen if s[5] is not None]
        return {
            "samples": len(chosen),
            "pg_worker_peak": max((s[1] for s in chosen), default=None),
            "pg_worker_busy_peak": max((s[2] for s in chosen), default=None),
            "pg_worker_median": statistics.median([s[1] for s in chosen]) if chosen else None,
            "pg_ours_peak": max((s[3] for s in chosen), default=None),
            "pg_total_peak": max((s[1] + s[3] for s in chosen), default=None),
            "rss_peak_mib": max(rss) / 2**20 if rss else None,
            "threads_peak": max(threads) if threads else None,
        }


# --------------------------------------------------------------------------- rounds


FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


def _count_finished(ids: list) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM workflow_executions WHERE id = ANY(%s) AND status = ANY(%s)",
                       [ids, list(FINISHED)])
        return cursor.fetchone()[0]


def _json(value):
    """A JSON column read with a raw cursor (Django hands jsonb over as text)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def check_calls(stats: dict, xs: list[str]) -> dict:
    """Every expected prompt exactly once, nothing else."""
    counts = stats["counts"]
    expected = {prompt for x in xs for prompt in expected_prompts(x)[0]}
    missing = sum(1 for prompt in expected if prompt not in counts)
    repeated = sum(1 for prompt in expected if counts.get(prompt, 0) > 1)
    extra_calls = sum(n - 1 for prompt, n in counts.items() if prompt in expected and n > 1)
    unexpected = sum(n for prompt, n in counts.items() if prompt not in expected)
    return {"expected": len(expected), "made": stats["calls"], "missing": missing, "repeated": repeated,
            "extra_calls": extra_calls, "unexpected": unexpected, "bad": stats["bad"],
            "once": missing == 0 and repeated == 0 and unexpected == 0 and stats["bad"] == 0}


class Bench:
    def __init__(self, args, log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.fake: FakeServer | None = None
        self.worker: Worker | None = None
        self.workers_started = 0
        self.worker_settings: dict = {}
        self.sampler: Sampler | None = None
        self.user = self.workflow = None

    # -- worker lifecycle

    def start_worker(self) -> None:
        self.workers_started += 1
        self.worker = Worker(self.log_dir, self.fake.url, self.workers_started)
        print(f"Starting the worker: {' '.join(['python', *self.worker.argv[1:]])} (pid {self.worker.proc.pid})",
              flush=True)
        self.sampler.worker = self.worker
        deadline = time.monotonic() + 60
        while not self.worker.banner():
            self.worker.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"The worker printed no banner within 60 s:\n{self.worker.tail()}")
            time.sleep(0.2)
        self.warm_up()
        if not self.worker_settings:
            self.worker_settings = {"argv": " ".join(["python", *self.worker.argv[1:]]), "banner": self.worker.banner(),
                                    "inspect": self.worker.inspect_stats()}
            print(f"  worker: {self.worker_settings['banner']}, inspect: {self.worker_settings['inspect']}",
                  flush=True)

    def stop(self) -> None:
        self.stop_worker()
        self.sampler.stop()
        if self.fake is not None:
            self.fake.stop()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.sampler.worker = None
            self.worker = None

    def warm_up(self) -> None:
        """Runs at a short delay so the pool's threads/processes import, connect and build clients."""
        n, delay = self.args.warm, 0.2
        if n <= 0:
            return
        print(f"  warm-up: {n} runs at {delay} s...", flush=True)
        result = self.engine_round(n, delay, f"warm{self.workers_started}", timeout=max(60.0, self.args.timeout),
                                   quiet=True)
        if result["timed_out"]:
            print(f"  warm-up did not finish ({result['completed']}/{n} runs); going on", flush=True)
            self.restart_worker(warm=False)

    def restart_worker(self, *, warm: bool = True) -> None:
        """After a round that timed out: drop its queued messages and start a fresh worker."""
        self.stop_worker()
        common.flush_broker()
        common.redis_client().set(OWNER_KEY, f"pid {os.getpid()}", ex=OWNER_TTL_SECONDS)
        if warm:
            self.start_worker()
        else:
            self.workers_started += 1
            self.worker = Worker(self.log_dir, self.fake.url, self.workers_started)
            self.sampler.worker = self.worker

    # -- one engine round

    def engine_round(self, n: int, delay: float, label: str, *, timeout: float, quiet: bool = False) -> dict:
        from django.db import connection

        from workflows.services.executions import execution_start
        from workflows.services.relay import relay_flush

        self.fake.reset(delay)
        xs = [f"{label}-{i}" for i in range(n)]
        pg_mark = self.sampler.pg_cpu_mark()
        table = proc_table()
        worker_cpu0 = group_usage(table, self.worker.pgid)["cpu_ticks"]
        fake_cpu0 = group_usage(table, self.fake.proc.pid)["cpu_ticks"]
        own_cpu0 = own_cpu_seconds()
        started = time.time()
        ids = [execution_start(workflow=self.workflow, inputs={"x": x}, started_by=self.user).pk for x in xs]
        submitted = time.time()
        relay_flush(timeout=10)
        deadline = started + timeout
        timed_out = False
        while True:
            if _count_finished(ids) >= n:
                break
            self.worker.check_alive()
            if time.time() > deadline:
                timed_out = True
                break
            time.sleep(0.2)
        ended = time.time()
        table = proc_table()
        cpu = {
            "worker_s": (group_usage(table, self.worker.pgid)["cpu_ticks"] - worker_cpu0) / TICKS,
            "fake_server_s": (group_usage(table, self.fake.proc.pid)["cpu_ticks"] - fake_cpu0) / TICKS,
            "bench_s": own_cpu_seconds() - own_cpu0,
        }
        time.sleep(SAMPLE_SECONDS * PROC_EVERY * 1.5)  # the sampler's next /proc tick
        cpu["postgres_s"] = self.sampler.pg_cpu_since(pg_mark)
        stats = self.fake.stats()
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, status, completed_at, output, error FROM workflow_executions "
                           "WHERE id = ANY(%s)", [ids])
            rows = cursor.fetchall()
        rows = [(pk, status, done_at, _json(output), _json(error)) for pk, status, done_at, output, error in rows]
        by_id = {row[0]: row for row in rows}
        statuses = Counter(row[1] for row in rows)
        wrong = [x for pk, x in zip(ids, xs, strict=True)
                 if by_id[pk][1] == "COMPLETED" and by_id[pk][3] != expected_prompts(x)[1]]
        completed_at = [row[2].timestamp() for row in rows if row[1] == "COMPLETED" and row[2] is not None]
        errors = Counter(json.dumps(row[4])[:300] for row in rows if row[1] == "FAILED")
        completed = statuses.get("COMPLETED", 0)
        answered = stats["calls"] - stats["in_flight"]
        result = {
            "n": n, "delay": delay, "label": label, "timed_out": timed_out, "completed": completed,
            "statuses": dict(statuses), "submit_s": submitted - started,
            "wall_s": (max(completed_at) - started) if completed == n else None,
            "elapsed_s": ended - started,
            "projected_wall_s": (ended - started) * STEPS * n / answered if timed_out and answered else None,
            "first_call_after_s": (stats["first_call"] - started) if stats["first_call"] else None,
            "calls": check_calls(stats, xs), "peak_in_flight": stats["peak_in_flight"],
            "peak_server_connections": stats["peak_connections"], "wrong_outputs": len(wrong), "cpu": cpu,
            **self.sampler.window(started, ended),
        }
        ideal = STEPS * delay
        result["ratio"] = ideal / result["wall_s"] if result["wall_s"] and ideal else None
        if not quiet:
            self._print_round("engine", result)
        if statuses.get("FAILED") or statuses.get("CANCELLED") or wrong:
            raise AssertionError(
                f"Round {label}: runs did not all complete as expected: statuses {dict(statuses)}, "
                f"{len(wrong)} wrong outputs; errors: {dict(errors.most_common(5))}\n--- worker log ---\n"
                f"{self.worker.tail()}")
        return result

    # -- the floor

    def floor_round(self, n: int, delay: float, label: str, *, timeout: float) -> dict:
        import openai

        xs = [f"{label}-{i}" for i in range(n)]

        async def run() -> tuple[float, list[str]]:
            client = openai.AsyncOpenAI(api_key=API_KEY, base_url=f"{self.fake.url}/v1", max_retries=0, timeout=120)

            async def one(x: str) -> str:
                previous = None
                for index in range(1, STEPS + 1):
                    completion = await client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": prompt_for(index, x, previous)}])
                    previous = completion.choices[0].message.content
                return previous

            try:
                self.fake.reset(0)
                await asyncio.gather(*(one(f"{label}-warm-{i}") for i in range(10)))
                self.fake.reset(delay)
                started = time.perf_counter()
                outputs = await asyncio.wait_for(asyncio.gather(*(one(x) for x in xs)), timeout)
                return time.perf_counter() - started, outputs
            finally:
                await client.close()

        cpu0 = own_cpu_seconds()
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # no "exception never retrieved" on Ctrl-C
        try:
            wall, outputs = asyncio.run(run())
            timed_out = False
        except TimeoutError:
            wall, outputs, timed_out = None, [], True
        bench_cpu = own_cpu_seconds() - cpu0
        stats = self.fake.stats()
        wrong = sum(1 for x, out in zip(xs, outputs, strict=False) if out != expected_prompts(x)[1])
        ideal = STEPS * delay
        result = {"n": n, "delay": delay, "label": label, "timed_out": timed_out, "wall_s": wall,
                  "ratio": ideal / wall if wall and ideal else None, "calls": check_calls(stats, xs),
                  "peak_in_flight": stats["peak_in_flight"], "wrong_outputs": wrong, "cpu": {"bench_s": bench_cpu}}
        self._print_round("floor", result)
        return result

    @staticmethod
    def _print_round(kind: str, r: dict) -> None:
        wall = f"wall {r['wall_s']:.2f} s" if r.get("wall_s") else (
            f"TIMED OUT after {r.get('elapsed_s', 0):.0f} s, {r.get('completed', '?')}/{r['n']} runs"
            + (f", projected wall ≈ {r['projected_wall_s']:.0f} s" if r.get("projected_wall_s") else ""))
        ratio = f", ideal/wall {r['ratio']:.2f}" if r.get("ratio") else ""
        calls = r["calls"]
        extra = ""
        if kind == "floor" and r["calls"]["made"]:
            extra = f"; client CPU {1000 * r['cpu']['bench_s'] / r['calls']['made']:.2f} ms per call"
        if kind == "engine":
            extra = (f"; submit {r['submit_s']:.2f} s; peak calls in flight {r['peak_in_flight']}; PG conns peak "
                     f"{r['pg_worker_peak']}, {r['pg_worker_busy_peak']} not idle (+{r['pg_ours_peak']} ours); RSS peak "
                     f"{fmt(r['rss_peak_mib'], 0)} MiB; CPU worker {r['cpu']['worker_s']:.1f} s, "
                     f"postgres {r['cpu']['postgres_s']:.1f} s, bench {r['cpu']['bench_s']:.1f} s, "
                     f"fake server {r['cpu']['fake_server_s']:.1f} s"
                     + (f"; per call made: worker {1000 * r['cpu']['worker_s'] / r['calls']['made']:.1f} ms, "
                        f"postgres {1000 * r['cpu']['postgres_s'] / r['calls']['made']:.1f} ms CPU"
                        if r["calls"]["made"] else ""))
        print(f"    {kind:6} N={r['n']} delay={r['delay']:g}: {wall}{ratio}; calls {calls['made']}/{calls['expected']}"
              f"{'' if calls['once'] else ' NOT each once: ' + json.dumps(calls)}{extra}", flush=True)


# --------------------------------------------------------------------------- report


def fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def best(rounds: list[dict]) -> dict:
    done = [r for r in rounds if r.get("wall_s")]
    return min(done, key=lambda r: r["wall_s"]) if done else rounds[0]


def verdicts(configs, engine, floors, sampler: Sampler, delay: float) -> list[dict]:
    ns = sorted({n for n, d in configs if d == delay})
    out = []
    if ns:
        n = ns[0]
        r = best(engine[(n, delay)])
        ideal = STEPS * delay
        figure = f"ideal/wall {fmt(r['ratio'])} (wall {fmt(r['wall_s'])} s, ideal {ideal:g} s)" if r["wall_s"] else (
            f"timed out: {r['completed']}/{n} runs in {r['elapsed_s']:.0f} s"
            + (f", projected wall ≈ {r['projected_wall_s']:.0f} s (ideal/wall ≈ {ideal / r['projected_wall_s']:.2f})"
               if r.get("projected_wall_s") else ""))
        out.append({"goal": f"N={n}: ideal/wall >= {GOAL_RATIO}", "met": bool(r["ratio"] and r["ratio"] >= GOAL_RATIO),
                    "figure": figure})
    if ns and (ns[-1], 0.0) in engine and delay > 0:
        n = ns[-1]
        r, zero = best(engine[(n, delay)]), best(engine[(n, 0.0)])
        if zero["wall_s"]:
            bound = GOAL_WALL_FACTOR * max(STEPS * delay, zero["wall_s"])
            figure = (f"wall {fmt(r['wall_s'])} s vs bound {bound:.2f} s = {GOAL_WALL_FACTOR} x max({STEPS * delay:g} s, "
                      f"{zero['wall_s']:.2f} s at delay 0)") if r["wall_s"] else (
                f"timed out ({r['completed']}/{n} runs in {r['elapsed_s']:.0f} s"
                + (f", projected wall ≈ {r['projected_wall_s']:.0f} s" if r.get("projected_wall_s") else "")
                + f"); bound {bound:.2f} s")
            met = bool(r["wall_s"] and r["wall_s"] <= bound)
        else:
            figure, met = "the delay-0 round did not finish: no bound", False
        out.append({"goal": f"N={n}: wall <= {GOAL_WALL_FACTOR} x max({STEPS * delay:g} s, wall at delay 0)",
                    "met": met, "figure": figure})
    pg_peak = max((s[1] for s in sampler.samples), default=None)
    ours = max((s[3] for s in sampler.samples), default=0)
    out.append({"goal": f"PostgreSQL connections <= {GOAL_MAX_PG} throughout",
                "met": pg_peak is not None and pg_peak <= GOAL_MAX_PG,
                "figure": f"peak {pg_peak} of the worker (sampled every {SAMPLE_SECONDS * 1000:.0f} ms while it ran; "
                          f"+{ours} of this script's own)"})
    all_rounds = [r for rounds in engine.values() for r in rounds] + [r for rounds in floors.values() for r in rounds]
    extra = sum(r["calls"]["extra_calls"] + r["calls"]["unexpected"] + r["calls"]["bad"] for r in all_rounds)
    missing = {r["label"]: r["calls"]["missing"] for r in all_rounds if r["calls"]["missing"]}
    timed_out = [r["label"] for r in all_rounds if r["timed_out"]]
    made = sum(r["calls"]["made"] for r in all_rounds)
    if not extra and not missing:
        figure = f"all {made:,} prompts of all rounds exactly once"
    else:
        figure = (f"{extra} calls made more than once or unexpected; prompts never called: "
                  f"{json.dumps(missing) if missing else 'none'}"
                  + (f" (rounds timed out: {', '.join(timed_out)})" if timed_out else ""))
    out.append({"goal": "every model call made once", "met": not extra and not missing, "figure": figure})
    return out


def print_table(configs, engine, floors) -> None:
    header = (f"{'round':14} | {'wall s':>12} | {'ideal/wall':>10} | {'floor wall s':>12} | {'floor i/w':>9} | "
              f"{'submit s':>8} | {'calls in flight':>15} | {'PG conns (busy)':>15} | {'worker RSS MiB':>14} | "
              f"{'CPU s: worker / PG / bench / fake':>33} | {'calls once':>10}")
    print(header)
    print("-" * len(header))
    for n, delay in configs:
        for i, r in enumerate(engine[(n, delay)]):
            f = floors[(n, delay)][i] if i < len(floors[(n, delay)]) else None
            wall = fmt(r["wall_s"]) if r["wall_s"] else (
                f">{r['elapsed_s']:.0f}" + (f" (~{r['projected_wall_s']:.0f})" if r.get("projected_wall_s") else ""))
            cpu = r["cpu"]
            pg = f"{r['pg_worker_peak']} ({r['pg_worker_busy_peak']})"
            print(f"{f'N={n} @{delay:g} s':14} | {wall:>12} | {fmt(r['ratio']):>10} | "
                  f"{fmt(f['wall_s']) if f else '':>12} | {fmt(f['ratio']) if f else '':>9} | {r['submit_s']:8.2f} | "
                  f"{r['peak_in_flight'] if delay else 'n/a':>15} | {pg:>15} | {fmt(r['rss_peak_mib'], 0):>14} | "
                  f"{cpu['worker_s']:7.1f} / {cpu['postgres_s']:5.1f} / {cpu['bench_s']:5.1f} / "
                  f"{cpu['fake_server_s']:5.1f}    | "
                  f"{'yes' if r['calls']['once'] and (not f or f['calls']['once']) else 'NO':>10}")
    print("(wall: first submission to last completed_at; '>T (~P)': timed out after T s, P = projected from the "
          "call rate. PG conns: the worker's peak, this script's own excluded; busy: "
          "not idle, i.e. active or in a transaction.)")


def parse_ns(text: str) -> list[int]:
    values = [int(v) for v in text.replace(" ", "").split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--n takes positive integers, comma-separated (e.g. 200,1000)")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=parse_ns, default=[200, 1000],
                        help="concurrent runs per round, comma-separated (default 200,1000)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the fake model takes to answer (default 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every round this many times; the fastest counts (default 1)")
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds a round may take, from its first submission (default 90); a round that "
                             "times out is reported with the runs it finished, and the worker is restarted")
    parser.add_argument("--warm", type=int, default=50, help="warm-up runs after the worker starts (default 50)")
    parser.add_argument("--no-cpu-floor", action="store_true",
                        help="skip the round against a model that answers at once")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    parser.add_argument("--code", help="the code measured, when this is not a git checkout (e.g. an extracted "
                                       "`git archive <commit>`); default: read from git")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fake:
        asyncio.run(_serve("127.0.0.1", args.port))
        return 0
    if args.rounds < 1 or args.timeout <= 0 or args.delay < 0:
        parser.error("--rounds must be at least 1, --timeout positive, --delay not negative")

    common.interrupt_on_signals()

    configure_env()
    import django

    django.setup()
    common.ensure_database()
    claim_database()
    ensure_broker()
    try:
        return run(args)
    finally:
        common.flush_broker()


def run(args) -> int:
    from django.db import connection

    info = machine()
    if args.code:
        info["code"] = args.code
    settings_seen = shipped_settings()
    print("PromptPilot runtime benchmark")
    for key, value in info.items():
        print(f"  {key:9} {value}")
    print(f"  database  {connection.settings_dict['NAME']} @ {connection.settings_dict.get('HOST') or 'local'}")
    print(f"  broker    {os.environ['CELERY_BROKER_URL']}")
    print(f"  settings  {json.dumps(settings_seen, default=str)}")
    configs = [(n, args.delay) for n in args.n]
    if not args.no_cpu_floor and args.delay > 0:
        configs.append((max(args.n), 0.0))
    print(f"  workload  {STEPS} PROMPT steps (openai {MODEL}) per run; rounds (N @ delay): "
          + ", ".join(f"{n} @ {d:g} s" for n, d in configs) + f"; x{args.rounds}; timeout {args.timeout:g} s\n",
          flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="promptpilot-bench-runtime-"))
    bench = Bench(args, log_dir)
    bench.user, bench.workflow = make_workflow()
    engine: dict[tuple[int, float], list[dict]] = {c: [] for c in configs}
    floors: dict[tuple[int, float], list[dict]] = {c: [] for c in configs}
    began = time.monotonic()
    load_before = os.getloadavg()
    bench.sampler = Sampler()
    with common.interruptible(worker=lambda: bench.worker, cleanup=bench.stop) as interruption:
        bench.fake = FakeServer(log_dir)
        print(f"Fake OpenAI server at {bench.fake.url} (pid {bench.fake.proc.pid})", flush=True)
        bench.sampler.start()
        bench.start_worker()
        for repeat in range(1, args.rounds + 1):
            for n, delay in configs:
                label = f"r{repeat}n{n}d{delay:g}-{os.getpid()}"
                print(f"Round {repeat}/{args.rounds}: N={n} at {delay:g} s", flush=True)
                result = bench.engine_round(n, delay, label, timeout=args.timeout)
                engine[(n, delay)].append(result)
                if result["timed_out"]:
                    print("    (timed out: stopping the worker, dropping its queued messages, starting a fresh one)",
                          flush=True)
                    bench.restart_worker()
                floors[(n, delay)].append(bench.floor_round(n, delay, f"floor-{label}", timeout=args.timeout))
        load_after = os.getloadavg()
    if interruption.interrupted:
        return 130

    print(f"\nResults ({info['date']}, {info['cpus']} CPUs {info['cpu']}, code {info['code']}):")
    ws = bench.worker_settings
    print(f"Worker: {ws.get('argv')}; pool {ws.get('banner', {}).get('pool')}, concurrency "
          f"{ws.get('banner', {}).get('concurrency')} (banner); inspect stats pool {ws.get('inspect')}; "
          f"workers started {bench.workers_started}\n")
    print_table(configs, engine, floors)
    print()
    goals = verdicts(configs, engine, floors, bench.sampler, args.delay)
    for g in goals:
        print(f"{g['goal']}: {'MET' if g['met'] else 'NOT MET'} -- {g['figure']}")
    if bench.sampler.error:
        print(f"(the connection sampler stopped early: {bench.sampler.error})")
    print(f"\nLoad average (1, 5, 15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, after "
          f"{'/'.join(f'{v:.2f}' for v in load_after)}; total {time.monotonic() - began:.0f} s; logs in {log_dir}")

    if args.json:
        summary = {
            "machine": info, "settings": settings_seen, "worker": ws, "workers_started": bench.workers_started,
            "configs": [{"n": n, "delay": d} for n, d in configs],
            "engine": {f"{n}@{d:g}": rounds for (n, d), rounds in engine.items()},
            "floor": {f"{n}@{d:g}": rounds for (n, d), rounds in floors.items()},
            "goals": goals, "pg_worker_peak_overall": max((s[1] for s in bench.sampler.samples), default=None),
            "load_before": load_before, "load_after": load_after,
        }
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
