"""Engine benchmark: PromptPilot against a plain loop and a raw Celery chain, in one run.

    python bench/engine.py [--n 200] [--idle 20] [--rounds 2] [--profile]

Three modes do the same work per step (render the step's template with the project's
sandboxed Jinja2, call the ``echo`` adapter) for a 5-step workflow:

  (a) floor      the 5 renders + echo calls in a plain loop, in this process;
  (b) raw chain  a Celery chain of 5 tasks on the same Redis broker and worker, each
                 doing the same render + echo call and one PostgreSQL INSERT;
  (c) PromptPilot ``execution_start`` of a 5-step PROMPT/echo workflow, run by the
                 project's own tasks (claim, lease, fencing, checkpoint per step).

Throughput: N runs submitted at once, executions/s = N / (last completion - first
submission). Idle latency: single runs one at a time, from just before submission to the
completion time the worker recorded. Per-step overhead = (p50 latency - floor p50) / 5.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/13"
WORKFLOW_NAME = "bench: 5 echo steps"
BENCH_USER = "bench"
GOAL_RATIO = 0.8
GOAL_STEP_OVERHEAD_MS = 4.0


from bench.common import (  # noqa: E402
    ChildProcess,
    child_env,
    configure_env,
    ensure_broker,
    ensure_database,
    flush_broker,
    interrupt_on_signals,
    interruptible,
    machine,
    p50,
    p95,
    wait_until,
)
from bench.common import claim_database as claim_bench_database  # noqa: E402

configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL)

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from bench.raw_chain import RAW_TABLE, STEPS, compute_step, raw_chain, step_name, step_template  # noqa: E402

# --------------------------------------------------------------------------- helpers


def prepare_database() -> None:
    """The bench database (bench/common.py), with the raw chain's table emptied."""
    from bench.raw_chain import CREATE_TABLE_SQL

    ensure_database()
    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE_SQL)
        cursor.execute(f"TRUNCATE {RAW_TABLE}")


def claim_database() -> None:
    claim_bench_database(ADVISORY_LOCK, "bench/engine.py")


OWNER_KEY = "promptpilot-bench:owner"
OWNER_TTL_SECONDS = 900  # longer than any run; a run killed with SIGKILL frees the broker after that
ADVISORY_LOCK = 0x70705F62656E6368  # "pp_bench"


def make_workflow(*, stale_stats: bool = False):
    """The bench workflow (variable ``x``, 5 PROMPT steps answered by ``echo``) and its user.

    By default the database looks like a production one whose autovacuum has run: at
    least HISTORY_RUNS finished runs (seeded once with bulk_create) and fresh planner
    statistics (VACUUM ANALYZE). With ``stale_stats`` the bench history is deleted and
    the emptied tables are analysed, as on a new deployment whose tables then grow faster
    than autovacuum re-analyses them (see "Where the time goes" in bench/README.md).
    """
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow, WorkflowExecution, WorkflowStep, WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    expected = [step_template(index) for index in range(1, STEPS + 1)]
    workflow = None
    for candidate in Workflow.objects.filter(owner=user, name=WORKFLOW_NAME).order_by("-id"):
        templates = [s.config.get("template") for s in candidate.steps.order_by("order")]
        if templates == expected and not candidate.max_concurrent_executions and candidate.is_active:
            workflow = candidate
            break
    if stale_stats:
        old = Workflow.objects.filter(owner=user, name=WORKFLOW_NAME)
        WorkflowExecution.objects.filter(workflow__in=old).delete()
        old.delete()
        workflow = None
    if workflow is None:
        workflow = Workflow.objects.create(owner=user, name=WORKFLOW_NAME)
        WorkflowVariable.objects.create(workflow=workflow, name="x", type="STRING", required=True)
        for index in range(1, STEPS + 1):
            WorkflowStep.objects.create(
                workflow=workflow,
                order=index,
                name=step_name(index),
                type="PROMPT",
                config={"template": step_template(index), "model": {"provider": "echo", "model": "echo"}},
            )
    workflow_version_create(workflow=workflow, note="bench/engine.py")
    if not stale_stats:
        _seed_history(workflow, user)
    with connection.cursor() as cursor:
        verb = "ANALYZE" if stale_stats else "VACUUM ANALYZE"
        for table in ("workflow_executions", "workflow_step_executions"):
            cursor.execute(f"{verb} {table}")
    return user, workflow


HISTORY_RUNS = 2000


def _seed_history(workflow, user) -> None:
    """Finished runs for the planner to see, as in a database that has been in use."""
    from django.utils import timezone

    from workflows.models import WorkflowExecution, WorkflowStepExecution

    missing = HISTORY_RUNS - WorkflowExecution.objects.count()
    if missing <= 0:
        return
    print(f"Seeding {missing} finished runs of history (once)...", flush=True)
    version = workflow.versions.order_by("-number").first()
    now = timezone.now()
    executions = WorkflowExecution.objects.bulk_create(
        [
            WorkflowExecution(
                workflow=workflow, version=version, status="COMPLETED", input={"x": f"old {i}"},
                output="old", aggregate_tokens={"input": 0, "output": 0, "total": 0}, started_by=user,
                started_at=now, completed_at=now, metadata={"bench": "history"},
            )
            for i in range(missing)
        ],
        batch_size=500,
    )
    WorkflowStepExecution.objects.bulk_create(
        [
            WorkflowStepExecution(
                execution=execution, step_name=step_name(index), step_order=index, step_type="PROMPT",
                status="COMPLETED", output="old", input={"prompt": "old"}, tokens={"input": 1, "output": 1, "total": 2},
                started_at=now, completed_at=now,
            )
            for execution in executions
            for index in range(1, STEPS + 1)
        ],
        batch_size=1000,
    )


# --------------------------------------------------------------------------- worker


class Worker(ChildProcess):
    """Our own Celery worker, started as the contract command starts it (the shipped pool
    and concurrency) unless ``pool_args`` say otherwise, in its own process group."""

    label = "worker"

    def __init__(self, pool_args: list[str], log_dir: Path) -> None:
        argv = [
            sys.executable, "-m", "celery", "-A", "promptpilot", "worker",
            "-I", "bench.raw_chain",
            "-n", f"bench-{os.getpid()}@%h",
            *pool_args, "-l", "warning",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        super().__init__(argv, log_dir / "worker.log", child_env())


@contextmanager
def py_spy(executable: str | None, worker: Worker, out: Path):
    """Sample the worker and its pool children with py-spy while the block runs (optional)."""
    if not executable:
        yield
        return
    argv = [executable, "record", "--pid", str(worker.proc.pid), "--subprocesses", "--rate", "250",
            "--format", "raw", "--output", str(out), "--nonblocking"]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)


@contextmanager
def lock_sampler(enabled: bool, into: Counter):
    """Sample, every 10 ms on a connection of its own, which row locks the bench
    database's backends are waiting for (relation of ``tuple`` locks, else lock type)."""
    if not enabled:
        yield
        return
    import threading

    import psycopg

    settings = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"], user=settings["USER"], password=settings.get("PASSWORD") or None,
        host=settings.get("HOST") or None, port=settings.get("PORT") or None)
    stop = threading.Event()

    def run() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while not stop.wait(0.01):
                into["samples"] += 1
                for locktype, relation in conn.execute(
                    "SELECT l.locktype, l.relation::regclass::text FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()"
                ).fetchall():
                    into[f"{locktype} {relation or ''}".strip()] += 1

    thread = threading.Thread(target=run, name="lock-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def summarise_py_spy(path: Path, top: int = 22) -> dict:
    """Where the worker's CPU went, from py-spy's raw output (idle samples are not recorded).

    Samples are split between the worker's main process (consumer: broker I/O, dispatch
    to the pool) and its pool children (the tasks). For the children: the share of their
    samples under each function (line numbers dropped), leaving out the plumbing that is
    under every sample, and the functions that were on top of the stack (self time).
    """
    if not path.exists():
        return {}
    main_samples = child_samples = 0
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame for frame in stack.split(";")[1:]]
        if not any(frame.startswith("BaseProcess._bootstrap") for frame in frames):
            main_samples += n
            continue
        child_samples += n
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            leaf[frames[-1]] += n
    if not child_samples:
        return {}
    shares = [(frame, 100.0 * count / child_samples) for frame, count in inclusive.most_common()]
    return {
        "main_samples": main_samples,
        "child_samples": child_samples,
        "inclusive": [(frame, share) for frame, share in shares if share < 97.0][:top],
        "self": [(frame, 100.0 * count / child_samples) for frame, count in leaf.most_common(12)],
    }


# --------------------------------------------------------------------------- (a) floor


def run_floor(n: int):
    """The same 5 renders + echo calls in a plain loop."""
    for i in range(10):  # compile templates, import adapters
        _floor_run(f"warm {i}")
    durations = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        _floor_run(f"item {i}")
        durations.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    return {"throughput": n / elapsed, "latencies": durations}


def _floor_run(x: str) -> str:
    previous = None
    for index in range(1, STEPS + 1):
        previous = compute_step(index, x, previous)
    return previous


def run_engine_in_process(n: int, workflow):
    """Extra row: the engine's own step code (runner.run_workflow) without any persistence."""
    from django.conf import settings

    from providers.registry import get_adapter
    from workflows.engine import runner
    from workflows.engine.types import WorkflowDefinition

    definition = WorkflowDefinition.from_dict(workflow.versions.order_by("-number").first().definition)
    limits = {
        "max_output_chars": settings.PROMPTPILOT["TEMPLATE_MAX_OUTPUT_CHARS"],
        "max_loop_iterations": settings.PROMPTPILOT["TEMPLATE_MAX_LOOP_ITERATIONS"],
    }
    for i in range(10):
        runner.run_workflow(definition, {"x": f"warm {i}"}, providers=get_adapter, limits=limits)
    durations = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        result = runner.run_workflow(definition, {"x": f"item {i}"}, providers=get_adapter, limits=limits)
        durations.append((time.perf_counter() - t0) * 1000)
        assert result.status == "COMPLETED", result.error
    elapsed = time.perf_counter() - started
    return {"throughput": n / elapsed, "latencies": durations}


# --------------------------------------------------------------------------- (b) raw chain


def _raw_done(batch: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {RAW_TABLE} WHERE batch = %s AND step = %s", [batch, STEPS])
        return cursor.fetchone()[0]


def _raw_rows(where: str, params: list):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT run_id, step, output, done_at FROM {RAW_TABLE} WHERE {where}", params)
        return cursor.fetchall()


def raw_batch(n: int, worker: Worker, label: str = "tp"):
    batch = f"{label}-{uuid.uuid4().hex[:8]}"
    started = time.time()
    for i in range(n):
        raw_chain(batch, f"{batch}-{i}", f"item {i}").apply_async()
    wait_until(lambda: _raw_done(batch) >= n, timeout=max(60, n * 0.5), interval=0.05,
               what=f"raw chain batch of {n}", check=worker.check_alive)
    rows = _raw_rows("batch = %s", [batch])
    last = max(done_at for _, _, _, done_at in rows)
    finals = {run_id: output for run_id, step, output, _ in rows if step == STEPS}
    expected = _floor_run("item 0")
    if finals.get(f"{batch}-0") != expected:
        raise AssertionError("The raw chain's output differs from the floor's: the modes do not do the same work.")
    return {"throughput": n / (last - started), "elapsed": last - started}


def raw_single(worker: Worker, i: int, into: dict) -> None:
    """One raw chain run on an idle worker: end-to-end latency and step-to-step gaps."""
    run_id = f"idle-{uuid.uuid4().hex[:12]}"
    started = time.time()
    raw_chain("idle", run_id, f"item {i}").apply_async()
    rows = wait_until(
        lambda: (r := _raw_rows("run_id = %s", [run_id])) and len(r) >= STEPS and r,
        timeout=30, interval=0.005, what="raw chain idle run", check=worker.check_alive,
    )
    done = sorted((step, done_at) for _, step, _, done_at in rows)
    into.setdefault("latencies", []).append((done[-1][1] - started) * 1000)
    into.setdefault("hops", []).extend((b[1] - a[1]) * 1000 for a, b in zip(done, done[1:], strict=False))


# --------------------------------------------------------------------------- (c) PromptPilot


def _pp_start(workflow, user, x: str):
    from workflows.services.executions import execution_start

    return execution_start(workflow=workflow, inputs={"x": x}, started_by=user)


def pp_batch(n: int, workflow, user, worker: Worker):
    from workflows.models import ExecutionStatus, WorkflowExecution

    started = time.time()
    ids = [_pp_start(workflow, user, f"item {i}").id for i in range(n)]
    submitted = time.time()
    unfinished = [ExecutionStatus.PENDING, ExecutionStatus.RUNNING]
    wait_until(
        lambda: not WorkflowExecution.objects.filter(pk__in=ids, status__in=unfinished).exists(),
        timeout=max(60, n * 1.0), interval=0.05, what=f"PromptPilot batch of {n}", check=worker.check_alive,
    )
    rows = list(WorkflowExecution.objects.filter(pk__in=ids).values("id", "status", "completed_at", "output"))
    statuses = Counter(row["status"] for row in rows)
    if statuses != {ExecutionStatus.COMPLETED: n}:
        raise AssertionError(f"PromptPilot runs did not all complete: {dict(statuses)}")
    first = next(row for row in rows if row["id"] == ids[0])
    if first["output"] != _floor_run("item 0"):
        raise AssertionError("PromptPilot's output differs from the floor's: the modes do not do the same work.")
    last = max(row["completed_at"].timestamp() for row in rows)
    return {"throughput": n / (last - started), "elapsed": last - started, "submit_s": submitted - started}


def pp_single(workflow, user, worker: Worker, i: int, into: dict) -> None:
    """One PromptPilot run on an idle worker: end-to-end latency and per-step timeline."""
    from workflows.models import ExecutionStatus, WorkflowStepExecution

    finished = [str(status) for status in ExecutionStatus.finished()]
    started = time.time()
    execution = _pp_start(workflow, user, f"item {i}")
    def poll():  # raw SQL, as cheap as the raw chain's poll: the client shares the 2 cores
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, created_at, completed_at FROM workflow_executions "
                           "WHERE id = %s AND status = ANY(%s)", [execution.pk, finished])
            found = cursor.fetchone()
        return dict(zip(("status", "created_at", "completed_at"), found, strict=True)) if found else None

    row = wait_until(poll, timeout=30, interval=0.005, what="PromptPilot idle run", check=worker.check_alive)
    if row["status"] != ExecutionStatus.COMPLETED:
        raise AssertionError(f"PromptPilot idle run ended {row['status']}")
    add = lambda key, value: into.setdefault(key, []).append(value)  # noqa: E731
    add("latencies", (row["completed_at"].timestamp() - started) * 1000)
    add("created_latencies", (row["completed_at"] - row["created_at"]).total_seconds() * 1000)
    steps = list(
        WorkflowStepExecution.objects.filter(execution_id=execution.pk).order_by("step_order")
        .values("created_at", "started_at", "completed_at")
    )
    for a, b in zip(steps, steps[1:], strict=False):
        add("hops", (b["completed_at"] - a["completed_at"]).total_seconds() * 1000)
        # a's checkpoint (its completed_at is taken first) until the next step's row is inserted
        add("between", (b["created_at"] - a["completed_at"]).total_seconds() * 1000)
    for step in steps:
        add("queue", (step["started_at"] - step["created_at"]).total_seconds() * 1000)  # send, broker, claim
        add("work", (step["completed_at"] - step["started_at"]).total_seconds() * 1000)


def lock_query_plans() -> dict[str, str]:
    """The plans PostgreSQL picks right now for the shipped code's ``select_for_update()
    .filter(pk=...).first()`` lookups. ``first()`` keeps the model's Meta.ordering, so the
    SQL is ``WHERE id = %s ORDER BY <ordering> LIMIT 1 FOR UPDATE``: with statistics older
    than the table's growth the planner may walk the ordering's index and filter on id."""
    import re

    from django.db import transaction

    from workflows.models import WorkflowExecution, WorkflowStepExecution

    plans = {}
    for label, model in (("step (transitions.step_claim/_checkpoint)", WorkflowStepExecution),
                         ("execution (transitions.execution_begin)", WorkflowExecution)):
        pk = model.objects.order_by("-created_at").values_list("pk", flat=True).first()
        if pk is None:
            continue
        with transaction.atomic():
            plan = model.objects.select_for_update().filter(pk=pk)[:1].explain()
        scans = re.findall(r"((?:Index|Index Only|Seq|Bitmap Heap) Scan(?: using \w+)? on \w+)", plan)
        plans[label] = "; ".join(scans) or plan.replace("\n", " | ")
    return plans


# --------------------------------------------------------------------------- profile


class QueryLog:
    """Every SQL statement and COMMIT on this thread's default connection, timed with
    perf_counter and tagged with the orchestration function that issued it. (psycopg 3
    sends BEGIN with the first statement of a transaction: it is inside that statement.)"""

    def __init__(self) -> None:
        self.tag = "other"
        self.entries: list[tuple[str, str, float]] = []

    def __call__(self, execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.entries.append((self.tag, sql, (time.perf_counter() - t0) * 1000))

    @contextmanager
    def capture(self):
        original_commit = connection._commit

        def timed_commit():
            t0 = time.perf_counter()
            try:
                return original_commit()
            finally:
                self.entries.append((self.tag, "COMMIT", (time.perf_counter() - t0) * 1000))

        connection._commit = timed_commit
        try:
            with connection.execute_wrapper(self):
                yield self
        finally:
            del connection._commit


def _query_kind(sql: str) -> str:
    upper = sql.upper()
    head = upper.split()[0] if upper.strip() else "?"
    table = ""
    keyword = {"INSERT": "INSERT INTO ", "UPDATE": "UPDATE ", "WITH": "UPDATE "}.get(head, " FROM ")
    if keyword in upper:
        table = sql[upper.index(keyword) + len(keyword):].split()[0].strip('"')
    if head == "SELECT" and upper.startswith("SELECT %S AS \"A\""):
        head = "SELECT exists"
    extra = " FOR UPDATE" if "FOR UPDATE" in upper else ""
    if " JOIN " in upper:
        extra += " (join)"
    if " ORDER BY " in upper and " LIMIT 1" in upper and ".\"ID\" = " in upper:
        order = upper.split(" ORDER BY ", 1)[1].split(" LIMIT ", 1)[0]
        if any(not term.strip().startswith(tuple(f'"{t}"."ID"' for t in (table.upper(),))) for term in order.split(",")):
            extra += " (pk lookup ORDER BY another column)"
    return f"{head} {table}{extra}".strip()


# The functions of one step attempt (and of admission), timed and tagged separately.
PROFILED = ("execution_admit", "_attempt", "_run_claimed")  # workflows/services/orchestration.py
TRANSITIONS = ("execution_begin", "step_claim", "_run_context", "step_checkpoint", "_checkpoint", "_schedule_step",
               "_finish")  # workflows/services/transitions/
FAST_PATH = ("admit", "claim", "checkpoint")  # workflows/services/transitions/_postgres.py, on PostgreSQL


def profile_in_process(workflow, user, runs: int = 30, out_dir: Path | None = None):
    """Drive PromptPilot's services in this process (no broker, no worker): time and count
    the statements of each orchestration function.

    In this process only, ``dispatch._send`` is replaced by an in-memory queue and the
    functions in PROFILED are wrapped with timers; both are restored afterwards.
    """
    from django.conf import settings

    from workflows.engine import runner
    from workflows.services import dispatch, orchestration, transitions
    from workflows.services.executions import execution_start
    from workflows.services.transitions import _postgres as fast_path

    queue: list[tuple[str, list]] = []
    log = QueryLog()
    calls: dict[str, list[float]] = defaultdict(list)
    recording = {"on": False}
    originals = {name: getattr(orchestration, name) for name in PROFILED}
    fast_originals = {name: getattr(fast_path, name) for name in FAST_PATH}
    transition_originals = {name: getattr(transitions, name) for name in TRANSITIONS}
    original_run_step = runner.run_step
    original_send = dispatch._send

    def timed(name, func):
        def wrapper(*args, **kwargs):
            outer, log.tag = log.tag, name
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                if recording["on"]:
                    calls[name].append((time.perf_counter() - t0) * 1000)
                log.tag = outer
        return wrapper

    def drive(x: str) -> None:
        timed("execution_start", execution_start)(workflow=workflow, inputs={"x": x}, started_by=user)
        while queue:
            name, args = queue.pop(0)
            if name == "workflows.advance_execution":
                orchestration.execution_admit(execution_id=args[0])
            elif name == "workflows.advance_executions":
                orchestration.executions_admit(execution_ids=[str(i) for i in args[0]])
            else:
                orchestration.step_attempt_run(step_execution_id=args[0], attempt=int(args[1]))

    dispatch._send = lambda name, args, countdown=None: queue.append((name, args)) or True
    # Each start's message at its commit, not from the start relay's thread: drive() runs it next.
    batch_seconds, settings.PROMPTPILOT["START_BATCH_SECONDS"] = settings.PROMPTPILOT["START_BATCH_SECONDS"], 0
    for name, func in originals.items():
        setattr(orchestration, name, timed(name, func))
    for name, func in fast_originals.items():
        setattr(fast_path, name, timed(f"fast_path.{name}", func))
    for name, func in transition_originals.items():
        setattr(transitions, name, timed(name, func))
    runner.run_step = timed("runner.run_step", original_run_step)
    try:
        for i in range(5):
            drive(f"warm {i}")
        recording["on"] = True
        with log.capture():
            for i in range(runs):
                drive(f"item {i}")
        recording["on"] = False
        profiler = cProfile.Profile()  # the same loop again, without the statement log
        profiler.enable()
        for i in range(runs):
            drive(f"prof {i}")
        profiler.disable()
    finally:
        dispatch._send = original_send
        settings.PROMPTPILOT["START_BATCH_SECONDS"] = batch_seconds
        runner.run_step = original_run_step
        for name, func in originals.items():
            setattr(orchestration, name, func)
        for name, func in fast_originals.items():
            setattr(fast_path, name, func)
        for name, func in transition_originals.items():
            setattr(transitions, name, func)
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(60)
    if out_dir is not None:
        (out_dir / "profile.txt").write_text(stream.getvalue())

    sql_ms: dict[str, float] = defaultdict(float)
    sql_count: Counter = Counter()
    by_kind_ms: dict[tuple[str, str], float] = defaultdict(float)
    by_kind_count: Counter = Counter()
    for tag, sql, ms in log.entries:
        kind = _query_kind(sql)
        sql_ms[tag] += ms
        sql_count[tag] += 1
        by_kind_ms[(tag, kind)] += ms
        by_kind_count[(tag, kind)] += 1
    steps = len(calls["_run_claimed"]) or 1  # one per step attempt, inline or delivered
    functions = {}
    for name, values in calls.items():
        n = len(values)
        if not n:
            continue
        own = [tag for tag in sql_ms if tag == name]
        functions[name] = {
            "calls_per_step": n / steps, "mean_ms": statistics.fmean(values), "p50_ms": p50(values),
            "sql_ms": sum(sql_ms[t] for t in own) / n, "statements": sum(sql_count[t] for t in own) / n,
        }
    statements = [
        {"function": tag, "statement": kind, "per_step": by_kind_count[(tag, kind)] / steps,
         "ms_each": ms / by_kind_count[(tag, kind)], "ms_per_step": ms / steps}
        for (tag, kind), ms in sorted(by_kind_ms.items(), key=lambda kv: -kv[1])
    ]

    raw_ms = []  # the raw chain's step body, in-process: compute + one INSERT (autocommit)
    with connection.cursor() as cursor:
        for i in range(runs * STEPS):
            t0 = time.perf_counter()
            output = compute_step(1, f"item {i}", None)
            cursor.execute(
                f"INSERT INTO {RAW_TABLE} (batch, run_id, step, output, done_at) VALUES (%s, %s, %s, %s, %s)",
                ["profile", str(i), 1, output, time.time()],
            )
            raw_ms.append((time.perf_counter() - t0) * 1000)
    roundtrip = []
    with connection.cursor() as cursor:
        for _ in range(200):
            t0 = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            roundtrip.append((time.perf_counter() - t0) * 1000)
    return {
        "runs": runs, "functions": functions, "statements": statements,
        "sql_statements_per_step": sum(sql_count[t] for t in sql_count if t not in ("execution_start",)) / steps,
        "raw_step_p50_ms": p50(raw_ms), "select1_p50_ms": p50(roundtrip),
        "profile_top": stream.getvalue(),
    }


def print_profile(result) -> None:
    print(f"\nIn-process profile of PromptPilot's services ({result['runs']} runs x {STEPS} steps, no broker):")
    print(f"  {'function':20} {'calls/step':>10} {'mean ms':>8} {'p50 ms':>7} {'in SQL ms':>9} {'statements':>10}")
    order = ["execution_start", "execution_admit", "execution_begin", "fast_path.admit", "_attempt", "step_claim",
             "fast_path.claim", "_run_context", "_run_claimed", "runner.run_step", "step_checkpoint",
             "fast_path.checkpoint", "_checkpoint", "_schedule_step", "_finish"]
    for name in order:
        f = result["functions"].get(name)
        if f:
            print(f"  {name:20} {f['calls_per_step']:10.2f} {f['mean_ms']:8.2f} {f['p50_ms']:7.2f} "
                  f"{f['sql_ms']:9.2f} {f['statements']:10.1f}")
    print("  (a function's SQL excludes the statements of the functions it calls that are listed above)")
    print(f"  statements per step (admission included, execution_start excluded): "
          f"{result['sql_statements_per_step']:.1f}; SELECT 1 round trip p50 {result['select1_p50_ms']:.3f} ms")
    print("  statements by cost (ms per step):")
    for row in result["statements"][:24]:
        print(f"    {row['ms_per_step']:6.3f}  {row['per_step']:4.2f}x {row['ms_each']:6.3f} ms  "
              f"{row['function']}: {row['statement']}")
    print(f"  raw chain step body in-process (render + echo + 1 INSERT autocommit): p50 {result['raw_step_p50_ms']:.2f} ms")


# --------------------------------------------------------------------------- main


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="executions per throughput batch (default 200)")
    parser.add_argument("--idle", type=int, default=20, help="single runs for idle latency (default 20)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="throughput rounds, raw chain and PromptPilot alternating; the best counts (default 2)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="worker concurrency (default: the shipped PROMPTPILOT_WORKER_CONCURRENCY)")
    parser.add_argument("--pool", default=None, help="worker pool (default: the shipped PROMPTPILOT_WORKER_POOL)")
    parser.add_argument("--profile", action="store_true", help="also profile PromptPilot's services in-process")
    parser.add_argument("--py-spy", nargs="?", const="py-spy", default=None, metavar="PATH",
                        help="sample the worker with py-spy during the throughput batches (py-spy on PATH or PATH)")
    parser.add_argument("--locks", action="store_true",
                        help="sample pg_locks for lock waits during PromptPilot's first batch (slows it a little)")
    parser.add_argument("--stale-stats", action="store_true",
                        help="delete the bench history and analyse the emptied tables first (plan hazard demo)")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    args = parser.parse_args(argv)
    if args.n < 1 or args.idle < 1 or args.rounds < 1:
        parser.error("--n, --idle and --rounds must be at least 1")

    interrupt_on_signals()

    prepare_database()
    claim_database()
    ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/engine.py")
    try:
        return _run(args)
    finally:
        flush_broker()


def _pool_args(args) -> list[str]:
    return ([*(["--pool", args.pool] if args.pool else []),
             *(["--concurrency", str(args.concurrency)] if args.concurrency else [])])


def _run(args) -> int:
    info = machine()
    print("PromptPilot engine benchmark")
    for key, value in info.items():
        print(f"  {key:16} {value}")
    print(f"  database  {connection.settings_dict['NAME']} @ {connection.settings_dict.get('HOST') or 'local'}")
    print(f"  broker    {os.environ['CELERY_BROKER_URL']}")
    print(f"  workload  {STEPS} PROMPT steps, echo provider; N={args.n}, idle runs={args.idle}, "
          f"worker {' '.join(_pool_args(args)) or 'shipped defaults'}\n", flush=True)

    user, workflow = make_workflow(stale_stats=args.stale_stats)
    results: dict[str, dict] = {}
    lock_waits: Counter = Counter()
    log_dir = Path(tempfile.mkdtemp(prefix="promptpilot-bench-"))
    worker = None
    began = time.monotonic()
    load_before = os.getloadavg()

    def stop_worker() -> None:
        if worker is not None:
            worker.stop()

    with interruptible(worker=lambda: worker, cleanup=stop_worker) as interruption:
        print("(a) floor: plain loop...", flush=True)
        results["floor"] = run_floor(args.n)
        results["engine"] = run_engine_in_process(args.n, workflow)

        print("Starting the worker...", flush=True)
        worker = Worker(_pool_args(args), log_dir)
        # readiness + warm-up: both pool children import, connect, compile templates
        raw_batch(10, worker, label="warm")
        pp_batch(10, workflow, user, worker)

        results["raw"], results["pp"] = {"rounds": []}, {"rounds": []}
        for round_ in range(1, args.rounds + 1):
            print(f"Round {round_}/{args.rounds}: (b) raw chain, {args.n} runs...", flush=True)
            with py_spy(args.py_spy if round_ == 1 else None, worker, log_dir / "py-spy-raw.txt"):
                results["raw"]["rounds"].append(raw_batch(args.n, worker))
            print(f"Round {round_}/{args.rounds}: (c) PromptPilot, {args.n} runs...", flush=True)
            with py_spy(args.py_spy if round_ == 1 else None, worker, log_dir / "py-spy-pp.txt"), \
                    lock_sampler(args.locks and round_ == 1, lock_waits):
                results["pp"]["rounds"].append(pp_batch(args.n, workflow, user, worker))
        plans = lock_query_plans()  # the tables just grew by 2 x N runs: statistics are at their stalest
        print(f"Idle latency: {args.idle} single runs of each, alternating...", flush=True)
        for i in range(args.idle):
            raw_single(worker, i, results["raw"])
            time.sleep(0.05)
            pp_single(workflow, user, worker, i, results["pp"])
            time.sleep(0.05)
        load_after = os.getloadavg()
    if interruption.interrupted:
        return 130

    for mode in ("raw", "pp"):  # the best round: noise on a shared machine only slows things down
        best = max(results[mode]["rounds"], key=lambda r: r["throughput"])
        results[mode].update(throughput=best["throughput"], elapsed=best["elapsed"], submit_s=best.get("submit_s"))
    floor_p50 = p50(results["floor"]["latencies"])

    def overhead(latencies):
        return p50([(lat - floor_p50) / STEPS for lat in latencies])

    rows = [
        ("(a) floor: plain loop", results["floor"]["throughput"], floor_p50, 0.0, None),
        ("    engine in-process (runner.run_workflow)", results["engine"]["throughput"],
         p50(results["engine"]["latencies"]), overhead(results["engine"]["latencies"]), None),
        ("(b) raw Celery chain + 1 PG row/step", results["raw"]["throughput"], p50(results["raw"]["latencies"]),
         overhead(results["raw"]["latencies"]), p50(results["raw"]["hops"])),
        ("(c) PromptPilot (checkpoint every step)", results["pp"]["throughput"], p50(results["pp"]["latencies"]),
         overhead(results["pp"]["latencies"]), p50(results["pp"]["hops"])),
    ]
    ratio = results["pp"]["throughput"] / results["raw"]["throughput"]
    pp_overhead = overhead(results["pp"]["latencies"])

    print(f"\nResults ({info['date']}, {info['cpus']} CPUs, {info['cpu']}), N={args.n}, idle runs={args.idle}:\n")
    header = f"{'mode':44} | {'executions/s':>12} | {'p50 latency/run (ms)':>20} | {'overhead/step p50 (ms)':>22} | {'step-to-step p50 (ms)':>21}"
    print(header)
    print("-" * len(header))
    for name, throughput, latency, step_overhead, hop in rows:
        print(f"{name:44} | {fmt(throughput):>12} | {fmt(latency, 2):>20} | {fmt(step_overhead, 2):>22} | "
              f"{fmt(hop, 2) if hop is not None else '':>21}")
    print()
    print(f"PromptPilot / raw chain throughput: {ratio:.2f}x (goal >= {GOAL_RATIO}x) "
          f"{'MET' if ratio >= GOAL_RATIO else 'NOT MET'}")
    print(f"PromptPilot per-step overhead p50: {pp_overhead:.2f} ms (goal <= {GOAL_STEP_OVERHEAD_MS} ms) "
          f"{'MET' if pp_overhead <= GOAL_STEP_OVERHEAD_MS else 'NOT MET'}")
    extra = (p50(results["pp"]["latencies"]) - p50(results["raw"]["latencies"])) / STEPS
    print(f"PromptPilot minus raw chain, per step (idle p50): {extra:.2f} ms")
    rounds = lambda mode: ", ".join(f"{r['throughput']:.1f}" for r in results[mode]["rounds"])  # noqa: E731
    print(f"\nThroughput rounds (executions/s; the best is in the table): raw chain {rounds('raw')}; "
          f"PromptPilot {rounds('pp')}")
    print(f"Load average (1, 5, 15 min) before {_load(load_before)}, after {_load(load_after)}"
          f"{' -- other work was running: figures are pessimistic' if max(load_before[0], 0) > 0.5 else ''}")
    for label, plan in plans.items():
        hazard = "" if "_pkey" in plan else "   <-- not the primary key: see 'Where the time goes' in bench/README.md"
        print(f"Plan of the {label} row lock after the batches: {plan}{hazard}")
    if lock_waits:
        samples = lock_waits.pop("samples", 0)
        print(f"Lock waits during PromptPilot's first batch ({samples} samples, 10 ms apart): "
              + (", ".join(f"{kind} in {100 * n / samples:.0f} %" for kind, n in lock_waits.most_common(6)) or "none"))
    pp = results["pp"]
    print(f"\nPromptPilot details: submitting {args.n} runs took {pp['submit_s']:.2f} s of the batch's "
          f"{pp['elapsed']:.2f} s; idle p95 {p95(pp['latencies']):.1f} ms, raw chain idle p95 "
          f"{p95(results['raw']['latencies']):.1f} ms;")
    print(f"  per step (idle, p50): created -> claimed {p50(pp['queue']):.2f} ms, claimed -> checkpoint "
          f"{p50(pp['work']):.2f} ms, checkpoint -> next row {p50(pp['between']):.2f} ms; "
          f"created_at -> completed_at p50 {p50(pp['created_latencies']):.1f} ms per run")

    if args.py_spy:
        for label in ("raw", "pp"):
            summary = summarise_py_spy(log_dir / f"py-spy-{label}.txt")
            if not summary:
                print(f"\npy-spy: no samples for the {label} batch")
                continue
            print(f"\npy-spy, worker CPU during the {label} batch ({log_dir / f'py-spy-{label}.txt'}): "
                  f"{summary['main_samples']} samples in the main process, {summary['child_samples']} in pool children")
            print("  pool children, % of their samples under each function:")
            for frame, share in summary["inclusive"]:
                print(f"    {share:5.1f}%  {frame[:140]}")
            print("  pool children, self (top of stack):")
            for frame, share in summary["self"]:
                print(f"    {share:5.1f}%  {frame[:140]}")

    profile = None
    if args.profile:
        profile = profile_in_process(workflow, user, out_dir=log_dir)
        print_profile(profile)
        print(f"  cProfile (top 40 by cumulative time): {log_dir / 'profile.txt'}")
    print(f"\nTotal {time.monotonic() - began:.0f} s; worker log: {worker.log_path if worker else '-'}")

    if args.json:
        summary = {
            "machine": info, "n": args.n, "idle": args.idle,
            "rows": [{"mode": name.strip(), "executions_per_s": t, "p50_latency_ms": lat,
                      "step_overhead_p50_ms": o, "step_to_step_p50_ms": h} for name, t, lat, o, h in rows],
            "lock_plans": plans, "ratio": ratio, "pp_step_overhead_ms": pp_overhead, "pp_minus_raw_per_step_ms": extra,
            "rounds": {mode: [r["throughput"] for r in results[mode]["rounds"]] for mode in ("raw", "pp")},
            "load_before": load_before, "load_after": load_after,
            "profile": {k: v for k, v in (profile or {}).items() if k != "profile_top"},
        }
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
