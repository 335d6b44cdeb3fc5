"""Provider benchmark (issue 3): multi-model fan-out, fallback cost, adapter overhead.

    python bench/providers.py [--latency 0.2] [--repeats 15] [--calls 300] [--json FILE]

Everything runs in this process against the fake LLM server of the provider tests
(``providers/tests/fakes.py``), with the real SDKs (openai, anthropic, google-genai);
no database, broker or network. Three measurements:

  1. parallel fan-out: a PROMPT step with 3 models (one per SDK), each answering after
     L seconds, run through ``workflows.engine.runner.run_step``: step latency / L
     (goal <= 1.15; 1.0 is perfect overlap, 3.0 would be one after another);
  2. fallback: the same step in ``fallback`` mode whose first model fails at once (HTTP
     500): latency added over the second model alone;
  3. adapter overhead per call: ``adapter.complete`` against a bare ``httpx`` POST of the
     same JSON to the same fake endpoint, both on pooled keep-alive connections
     (goal <= 1.5 ms per call); likewise for ``acomplete`` (the multi-model path) against
     a bare ``httpx.AsyncClient`` POST on the same loop, and one-model ``dispatch``.

Bounded: every call has a timeout, and the defaults take about a minute. See
bench/README.md ("Providers").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL_FANOUT_RATIO = 1.15
GOAL_OVERHEAD_MS = 1.5
TIMEOUT_SECONDS = 10.0


def _configure(server_url: str) -> None:
    """Minimal Django settings: provider credentials only (no apps, no database)."""
    from django.conf import settings

    providers = {
        "OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": f"{server_url}/v1",
        "ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": server_url,
        "GEMINI_API_KEY": "bench", "GEMINI_BASE_URL": server_url,
    }
    if not settings.configured:
        settings.configure(PROMPTPILOT={"PROVIDERS": providers, "PROVIDER_MODULES": []})


def _ms(seconds: float) -> float:
    return seconds * 1000


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- 1 and 2: steps over several fake models ----------------------------------------------


MODELS = [
    {"provider": "openai", "model": "gpt-a"},
    {"provider": "anthropic", "model": "claude-b"},
    {"provider": "gemini", "model": "gemini-c"},
]


def _step(models: list[dict[str, Any]], mode: str) -> Any:
    from workflows.engine.types import StepDefinition

    config: dict[str, Any] = {"template": "Say hi to {{ input.name }}"}
    if len(models) == 1:
        config["model"] = models[0]
    else:
        config.update(models=models, mode=mode)
    return StepDefinition(name="bench", order=1, type="PROMPT", config=config, timeout_seconds=TIMEOUT_SECONDS)


def _run_step(step: Any) -> Any:
    from providers.flags import MULTI_MODEL
    from providers.registry import get_adapter
    from workflows.engine.runner import run_step
    from workflows.engine.types import RunContext

    result = run_step(step, RunContext(inputs={"name": "Ada"}), providers=get_adapter,
                      limits={"features": frozenset({MULTI_MODEL})})
    if result.status != "COMPLETED":
        raise SystemExit(f"bench step failed: {result.error}")
    return result


def bench_steps(server: Any, latency: float, repeats: int) -> dict[str, Any]:
    from providers.tests.fakes import Reply
    from providers.tests.multimodel import ANTHROPIC, GEMINI, OPENAI, model_of

    wires = {"gpt-a": OPENAI, "claude-b": ANTHROPIC, "gemini-c": GEMINI}
    failing: set[str] = set()

    def answer(request: Any) -> Reply:
        model = model_of(request)
        wire = wires[model]
        if model in failing:
            return Reply(500, wire.error(500, "bench: down"))
        return Reply(200, wire.success("hi"), delay=latency)

    server.default = answer
    parallel, fallback, single = _step(MODELS, "parallel"), _step(MODELS[:2], "fallback"), _step(MODELS[1:2], "")
    for step in (parallel, single):  # warm-up: SDK imports, clients, connections
        _run_step(step)

    fanout = _timed(lambda: _run_step(parallel), repeats)
    alone = _timed(lambda: _run_step(single), repeats)
    failing.add("gpt-a")
    _run_step(fallback)
    fell_back = _timed(lambda: _run_step(fallback), repeats)
    failing.clear()
    return {
        "latency_s": latency,
        "parallel_p50_ms": _ms(statistics.median(fanout)),
        "parallel_max_ms": _ms(max(fanout)),
        "parallel_ratio_p50": statistics.median(fanout) / latency,
        "parallel_ratio_max": max(fanout) / latency,
        "single_p50_ms": _ms(statistics.median(alone)),
        "fallback_p50_ms": _ms(statistics.median(fell_back)),
        "fallback_added_p50_ms": _ms(statistics.median(fell_back) - statistics.median(alone)),
    }


# --- 3: adapter overhead ----------------------------------------------------------------------


def bench_overhead(server: Any, calls: int) -> list[dict[str, Any]]:
    import httpx

    from providers.dispatcher import dispatch, run_coroutine
    from providers.registry import get_adapter
    from providers.tests.fakes import Reply
    from providers.tests.multimodel import ANTHROPIC, GEMINI, OPENAI
    from providers.types import ModelRequest

    wire_of = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI}
    server.default = lambda request: Reply(200, wire_of[_provider_of(request)].success("hi"))
    bodies = {
        "openai": ("/v1/chat/completions", {"model": "gpt-a", "messages": [{"role": "user", "content": "Say hi"}]},
                   {"authorization": "Bearer bench"}),
        "anthropic": ("/v1/messages", {"model": "claude-b", "max_tokens": 1024,
                                       "messages": [{"role": "user", "content": "Say hi"}]},
                      {"authorization": "Bearer bench", "anthropic-version": "2023-06-01"}),
        "gemini": ("/v1beta/models/gemini-c:generateContent", {"contents": [{"parts": [{"text": "Say hi"}],
                                                                            "role": "user"}]},
                   {"x-goog-api-key": "bench"}),
    }
    model_of = {"openai": "gpt-a", "anthropic": "claude-b", "gemini": "gemini-c"}
    rows = []
    bare = httpx.Client(base_url=server.url, timeout=TIMEOUT_SECONDS)
    bare_async: dict[str, httpx.AsyncClient] = {}

    async def bare_async_post(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        client = bare_async.get("c")
        if client is None:  # made on the dispatch loop, where it is used
            client = bare_async["c"] = httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT_SECONDS)
        response = await client.post(path, json=body, headers=headers)
        return response.json()

    for provider in ("openai", "anthropic", "gemini"):
        path, body, headers = bodies[provider]
        adapter = get_adapter(provider)
        request = ModelRequest(provider=provider, model=model_of[provider], prompt="Say hi",
                               timeout_seconds=TIMEOUT_SECONDS)

        def bare_call(path: str = path, body: dict[str, Any] = body, headers: dict[str, str] = headers) -> Any:
            return bare.post(path, json=body, headers=headers).json()

        def sdk_call(adapter: Any = adapter, request: ModelRequest = request) -> Any:
            return adapter.complete(request)

        def sdk_async(adapter: Any = adapter, request: ModelRequest = request) -> Any:
            return run_coroutine(adapter.acomplete(request))

        def bare_async_call(path: str = path, body: dict[str, Any] = body, headers: dict[str, str] = headers) -> Any:
            return run_coroutine(bare_async_post(path, body, headers))

        def one_model_dispatch(provider: str = provider) -> Any:
            return dispatch([{"provider": provider, "model": model_of[provider]}], "parallel", prompt="Say hi",
                            system=None, timeout_seconds=TIMEOUT_SECONDS, resolver=get_adapter)

        for fn in (bare_call, sdk_call, sdk_async, bare_async_call, one_model_dispatch):
            _timed(fn, 20)  # warm-up
        # Interleaved rounds, so both sides see the same background noise.
        samples: dict[str, list[float]] = {name: [] for name in ("bare", "sdk", "bare_async", "sdk_async", "dispatch")}
        rounds = 5
        for _ in range(rounds):
            samples["bare"] += _timed(bare_call, calls // rounds)
            samples["sdk"] += _timed(sdk_call, calls // rounds)
            samples["bare_async"] += _timed(bare_async_call, calls // rounds)
            samples["sdk_async"] += _timed(sdk_async, calls // rounds)
            samples["dispatch"] += _timed(one_model_dispatch, calls // rounds)
        p50 = {name: _ms(statistics.median(values)) for name, values in samples.items()}
        rows.append({
            "provider": provider,
            "bare_httpx_p50_ms": p50["bare"],
            "complete_p50_ms": p50["sdk"],
            "overhead_sync_ms": p50["sdk"] - p50["bare"],
            "bare_async_httpx_p50_ms": p50["bare_async"],
            "acomplete_p50_ms": p50["sdk_async"],
            "overhead_async_ms": p50["sdk_async"] - p50["bare_async"],
            "dispatch_one_model_p50_ms": p50["dispatch"],
        })
    bare.close()
    if "c" in bare_async:
        run_coroutine(bare_async["c"].aclose())
    return rows


def _provider_of(request: Any) -> str:
    if ":generateContent" in request.path:
        return "gemini"
    return "anthropic" if request.path.endswith("/messages") else "openai"


# --- report ------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="L: seconds each fake model takes (default 0.2)")
    parser.add_argument("--repeats", type=int, default=15, help="steps timed per mode (default 15)")
    parser.add_argument("--calls", type=int, default=300, help="calls timed per provider and path (default 300)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)  # as production's default LOG_LEVEL: no per-call lines
    logging.getLogger("providers").setLevel(logging.ERROR)  # the fallback's scripted 500s, logged per call
    from providers.tests.fakes import FakeServer

    server = FakeServer()
    try:
        _configure(server.url)
        started = time.monotonic()
        steps = bench_steps(server, args.latency, args.repeats)
        overhead = bench_overhead(server, args.calls)
        elapsed = time.monotonic() - started
    finally:
        server.close()

    print(f"# bench/providers.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ({elapsed:.0f} s)")
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}")
    print()
    print(f"Multi-model steps through runner.run_step, fake models answering after L = {args.latency * 1000:.0f} ms "
          f"({args.repeats} steps each):")
    print()
    print("| measure | p50 | max | goal |")
    print("| --- | ---: | ---: | --- |")
    ratio_ok = steps["parallel_ratio_p50"] <= GOAL_FANOUT_RATIO
    print(f"| parallel, 3 models (openai + anthropic + gemini): step latency / L | {steps['parallel_ratio_p50']:.3f} "
          f"| {steps['parallel_ratio_max']:.3f} | <= {GOAL_FANOUT_RATIO} ({_verdict(ratio_ok)}) |")
    print(f"| parallel step latency | {steps['parallel_p50_ms']:.1f} ms | {steps['parallel_max_ms']:.1f} ms | |")
    print(f"| single model (anthropic) step latency | {steps['single_p50_ms']:.1f} ms | | |")
    print(f"| fallback, first model fails at once (HTTP 500): step latency | {steps['fallback_p50_ms']:.1f} ms | | |")
    print(f"| fallback: added latency over the second model alone | {steps['fallback_added_p50_ms']:.1f} ms | | |")
    print()
    print(f"Adapter overhead per call, p50 of {args.calls} calls per path (fake server answers at once):")
    print()
    print("| provider | bare httpx | complete() | overhead | bare httpx async | acomplete() | overhead "
          "| dispatch(1 model) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for row in overhead:
        worst = max(worst, row["overhead_sync_ms"])
        print(f"| {row['provider']} | {row['bare_httpx_p50_ms']:.2f} ms | {row['complete_p50_ms']:.2f} ms | "
              f"**{row['overhead_sync_ms']:.2f} ms** | {row['bare_async_httpx_p50_ms']:.2f} ms | "
              f"{row['acomplete_p50_ms']:.2f} ms | {row['overhead_async_ms']:.2f} ms | "
              f"{row['dispatch_one_model_p50_ms']:.2f} ms |")
    print()
    print(f"Goal: overhead <= {GOAL_OVERHEAD_MS} ms per call (sync path, worst provider {worst:.2f} ms): "
          f"{_verdict(worst <= GOAL_OVERHEAD_MS)}.")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "overhead": overhead}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
