"""Fan-out benchmark: one MAP step of 200 items, each a 1 s model call, on the default worker.

    python bench/fanout.py [--items 200] [--concurrency 100] [--delay 1.0] [--rounds 1] [--json FILE]

The bench workflow has one MAP step over ``input.items`` whose inner step is a PROMPT
(``{"provider": "openai", "model": "gpt-4o-mini"}``, the ``openai`` SDK) answered by the
local fake OpenAI server of bench/runtime.py after ``--delay`` seconds. One worker is
started with the contract command and no pool or concurrency flags, on PostgreSQL + Redis.
Rounds:

  engine  one run started with ``execution_start``; wall = its start to its
          ``completed_at``; ideal = ceil(items / concurrency) x delay (2 s for the
          defaults); the worker's CPU (from /proc) per item;
  loop    the same calls from a plain asyncio loop in this process (``openai.AsyncOpenAI``,
          at most ``concurrency`` at once): the floor of this machine;
  instant both again against a server that answers at once: what each item costs the
          engine beyond its model call.

Per-item overhead: at ``--delay``, (engine wall - loop wall) x concurrency / items, i.e. the
time each item held one of the step's ``concurrency`` slots beyond its model call; with the
instant model, (engine wall - loop wall) / items (there the engine's own cost is the wall);
and the worker's CPU per item. The fake server counts the calls per prompt: every item must be called exactly
once. See the "Fan-out" section of bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common, runtime  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_fanout"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/9"  # flushed: a database no other bench uses
APP_NAME = "promptpilot-bench-fanout"
WORKFLOW_NAME = "bench: MAP of openai calls (fanout)"
OWNER_KEY = "promptpilot-bench-fanout:owner"
OWNER_TTL_SECONDS = 1800
ADVISORY_LOCK = 0x70705F66616E6F75  # "pp_fanou"
TEMPLATE = "Item {{ index }} of {{ input.run }}: {{ item }}"


def prompt_for(run: str, index: int, item: str) -> str:
    """What ``TEMPLATE`` renders to for one item (checked against the server's record)."""
    return f"Item {index} of {run}: {item}"


def make_workflow(concurrency: int):
    from django.contrib.auth import get_user_model

    from workflows.models import Workflow, WorkflowStep, WorkflowVariable
    from workflows.services.definitions import workflow_version_create

    user, _ = get_user_model().objects.get_or_create(username=runtime.BENCH_USER)
    config = {"items": "input.items", "concurrency": concurrency,
              "step": {"type": "PROMPT", "config": {"template": TEMPLATE,
                                                    "model": {"provider": "openai", "model": runtime.MODEL}}}}
    for candidate in Workflow.objects.filter(owner=user, name=WORKFLOW_NAME, is_active=True).order_by("-id"):
        steps = list(candidate.steps.all())
        if len(steps) == 1 and steps[0].config == config and not candidate.max_concurrent_executions:
            return user, candidate
    workflow = Workflow.objects.create(owner=user, name=WORKFLOW_NAME)
    WorkflowVariable.objects.create(workflow=workflow, name="run", type="STRING", required=True)
    WorkflowVariable.objects.create(workflow=workflow, name="items", type="JSON", required=True)
    WorkflowStep.objects.create(workflow=workflow, order=1, name="each", type="MAP", config=config)
    workflow_version_create(workflow=workflow, note="bench/fanout.py")
    return user, workflow


def check_calls(stats: dict, expected: set[str]) -> dict:
    counts = stats["counts"]
    missing = sum(1 for prompt in expected if prompt not in counts)
    repeated = sum(1 for prompt in expected if counts.get(prompt, 0) > 1)
    unexpected = sum(n for prompt, n in counts.items() if prompt not in expected)
    return {"expected": len(expected), "made": stats["calls"], "missing": missing, "repeated": repeated,
            "unexpected": unexpected, "once": not (missing or repeated or unexpected or stats["bad"])}


class Bench:
    def __init__(self, args, log_dir: Path) -> None:
        self.args = args
        self.log_dir = log_dir
        self.fake: runtime.FakeServer | None = None
        self.worker: runtime.Worker | None = None
        self.user = self.workflow = None

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.fake is not None:
            self.fake.stop()

    def start_worker(self) -> None:
        self.worker = runtime.Worker(self.log_dir, self.fake.url, 1)
        print(f"Starting the worker: {' '.join(['python', *self.worker.argv[1:]])}", flush=True)
        common.wait_until(self.worker.banner, timeout=60, interval=0.2, what="the worker's banner",
                          check=self.worker.check_alive)
        print(f"  worker: {self.worker.banner()}", flush=True)

    def engine_round(self, label: str, delay: float, items: int) -> dict:
        from workflows.models import WorkflowExecution, WorkflowStepExecution
        from workflows.services.executions import execution_start

        self.fake.reset(delay)
        words = [f"{label}-{i}" for i in range(items)]
        expected = {prompt_for(label, i, word) for i, word in enumerate(words)}
        worker_cpu0 = runtime.group_usage(runtime.proc_table(), self.worker.pgid)["cpu_ticks"]
        execution = execution_start(workflow=self.workflow, inputs={"run": label, "items": words},
                                    started_by=self.user)
        finished = common.wait_until(
            lambda: WorkflowExecution.objects.filter(pk=execution.pk, status__in=runtime.FINISHED).first(),
            timeout=self.args.timeout, interval=0.05, what=f"the MAP run {label}", check=self.worker.check_alive)
        worker_cpu = (runtime.group_usage(runtime.proc_table(), self.worker.pgid)["cpu_ticks"] - worker_cpu0) \
            / runtime.TICKS
        if finished.status != "COMPLETED":
            raise AssertionError(f"Round {label} ended {finished.status}: {finished.error}\n{self.worker.tail()}")
        outputs_ok = finished.output == [runtime.answer_for(prompt_for(label, i, w)) for i, w in enumerate(words)]
        rows = WorkflowStepExecution.objects.filter(execution_id=execution.pk, item_index__isnull=False)
        first_start = min(rows.values_list("started_at", flat=True))
        wall = (finished.completed_at - execution.created_at).total_seconds()
        result = {"label": label, "delay": delay, "items": items, "wall_s": wall,
                  "first_item_after_s": (first_start - execution.created_at).total_seconds(),
                  "worker_cpu_s": worker_cpu, "worker_cpu_ms_per_item": 1000 * worker_cpu / items,
                  "outputs_in_order": outputs_ok, "calls": check_calls(self.fake.stats(), expected),
                  "peak_in_flight": self.fake.stats()["peak_in_flight"]}
        print(f"    engine delay={delay:g}: wall {wall:.2f} s (first item after {result['first_item_after_s']:.2f} s); "
              f"peak calls in flight {result['peak_in_flight']}; worker CPU {worker_cpu:.1f} s "
              f"({result['worker_cpu_ms_per_item']:.1f} ms per item); outputs in order: {outputs_ok}; "
              f"calls once: {result['calls']['once']}", flush=True)
        return result

    def loop_round(self, label: str, delay: float, items: int) -> dict:
        import openai

        words = [f"{label}-{i}" for i in range(items)]
        prompts = [prompt_for(label, i, w) for i, w in enumerate(words)]

        async def run() -> float:
            client = openai.AsyncOpenAI(api_key=runtime.API_KEY, base_url=f"{self.fake.url}/v1", max_retries=0,
                                        timeout=120)
            slots = asyncio.Semaphore(self.args.concurrency)

            async def one(prompt: str) -> str:
                async with slots:
                    completion = await client.chat.completions.create(
                        model=runtime.MODEL, messages=[{"role": "user", "content": prompt}])
                    return completion.choices[0].message.content

            try:
                self.fake.reset(0)
                await asyncio.gather(*(one(f"{label}-warm-{i}") for i in range(10)))
                self.fake.reset(delay)
                started = time.perf_counter()
                answers = await asyncio.gather(*(one(p) for p in prompts))
                wall = time.perf_counter() - started
                assert answers == [runtime.answer_for(p) for p in prompts]
                return wall
            finally:
                await client.close()

        wall = asyncio.run(run())
        result = {"label": label, "delay": delay, "items": items, "wall_s": wall,
                  "calls": check_calls(self.fake.stats(), set(prompts))}
        print(f"    loop   delay={delay:g}: wall {wall:.2f} s", flush=True)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200, help="items of the MAP step (default 200)")
    parser.add_argument("--concurrency", type=int, default=100, help="the MAP step's concurrency (default 100)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds each model call takes (default 1)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each round; the fastest counts (default 1)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a round may take (default 120)")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    args = parser.parse_args(argv)
    if args.items < 1 or not 1 <= args.concurrency <= 1000 or args.delay <= 0 or args.rounds < 1:
        parser.error("--items >= 1, --concurrency 1..1000, --delay > 0, --rounds >= 1")

    common.interrupt_on_signals()
    common.configure_env(database_url=DEFAULT_DATABASE_URL, broker_url=DEFAULT_BROKER_URL, app_name=APP_NAME)
    import django

    django.setup()
    common.ensure_database()
    common.claim_database(ADVISORY_LOCK, "bench/fanout.py")
    common.ensure_broker(owner_key=OWNER_KEY, owner_ttl=OWNER_TTL_SECONDS, script="bench/fanout.py")
    try:
        return run(args)
    finally:
        common.flush_broker()


def run(args) -> int:
    import os

    info = runtime.machine()
    print("PromptPilot fan-out benchmark")
    for key, value in info.items():
        print(f"  {key:9} {value}")
    ideal = math.ceil(args.items / args.concurrency) * args.delay
    print(f"  workload  one MAP step, {args.items} items x 1 PROMPT (openai {runtime.MODEL}) at {args.delay:g} s, "
          f"concurrency {args.concurrency}; ideal {ideal:g} s; x{args.rounds}\n", flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="promptpilot-bench-fanout-"))
    bench = Bench(args, log_dir)
    bench.user, bench.workflow = make_workflow(args.concurrency)
    load_before = os.getloadavg()
    rounds: dict[str, list[dict]] = {"engine": [], "loop": [], "engine_instant": [], "loop_instant": []}
    with common.interruptible(worker=lambda: bench.worker, cleanup=bench.stop) as interruption:
        bench.fake = runtime.FakeServer(log_dir)
        bench.start_worker()
        print("  warm-up: one MAP of 50 items at 0.2 s...", flush=True)
        bench.engine_round(f"warm-{os.getpid()}", 0.2, 50)
        for repeat in range(1, args.rounds + 1):
            tag = f"r{repeat}-{os.getpid()}"
            print(f"Round {repeat}/{args.rounds}", flush=True)
            rounds["engine"].append(bench.engine_round(f"{tag}-d", args.delay, args.items))
            rounds["loop"].append(bench.loop_round(f"{tag}-loop-d", args.delay, args.items))
            rounds["engine_instant"].append(bench.engine_round(f"{tag}-0", 0.0, args.items))
            rounds["loop_instant"].append(bench.loop_round(f"{tag}-loop-0", 0.0, args.items))
    if interruption.interrupted:
        return 130
    load_after = os.getloadavg()

    best = {kind: min(found, key=lambda r: r["wall_s"]) for kind, found in rounds.items()}
    engine, loop = best["engine"], best["loop"]
    overhead_ms = 1000 * (engine["wall_s"] - loop["wall_s"]) * args.concurrency / args.items
    instant_ms = 1000 * (best["engine_instant"]["wall_s"] - best["loop_instant"]["wall_s"]) / args.items
    once = all(r["calls"]["once"] and r.get("outputs_in_order", True) for found in rounds.values() for r in found)
    print(f"\nResults ({info['date']}, {info['cpus']} CPUs {info['cpu']}, code {info['code']}):")
    print(f"  engine wall {engine['wall_s']:.2f} s vs ideal {ideal:g} s (ideal/wall {ideal / engine['wall_s']:.2f}); "
          f"plain loop {loop['wall_s']:.2f} s (ideal/wall {ideal / loop['wall_s']:.2f})")
    print(f"  per-item overhead at {args.delay:g} s: {overhead_ms:.0f} ms of slot time per item beyond its call "
          f"((engine wall - loop wall) x {args.concurrency} / {args.items}); worker CPU "
          f"{engine['worker_cpu_ms_per_item']:.1f} ms per item")
    print(f"  instant model: engine {best['engine_instant']['wall_s']:.2f} s "
          f"({args.items / best['engine_instant']['wall_s']:.0f} items/s), loop {best['loop_instant']['wall_s']:.2f} s: "
          f"{instant_ms:.1f} ms more per item ((engine wall - loop wall) / {args.items}); worker CPU "
          f"{best['engine_instant']['worker_cpu_ms_per_item']:.1f} ms per item")
    print(f"  every item called exactly once, outputs in item order: {'yes' if once else 'NO'}")
    print(f"  load average (1, 5, 15 min) before {'/'.join(f'{v:.2f}' for v in load_before)}, after "
          f"{'/'.join(f'{v:.2f}' for v in load_after)}; logs in {log_dir}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "ideal_s": ideal, "rounds": rounds,
                                         "overhead_ms_per_item": overhead_ms, "instant_overhead_ms_per_item": instant_ms,
                                         "load_before": load_before, "load_after": load_after}, indent=2,
                                        default=str))
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
