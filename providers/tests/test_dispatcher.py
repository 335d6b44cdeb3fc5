"""providers/dispatcher.py: parallel, fallback and race over the real SDKs (openai,
anthropic, google-genai) against the fake server, which sees every call: when it
started, when it was answered, and whether the client gave up on it first."""
from __future__ import annotations

import time
from typing import Any

import pytest

from providers import dispatcher
from providers.dispatcher import ALL_FAILED, CANCELLED, dispatch
from providers.errors import UnknownProvider
from providers.ratelimit import Limit, LimitedAdapter, get_backend
from providers.registry import get_adapter
from providers.types import ModelRequest, ModelResponse

from .fakes import FakeServer, Reply
from .multimodel import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    THREE,
    calls_to,
    fail,
    ok,
    point_all_providers_at,
    script,
    wait_until,
)

SLOW = 0.3  # seconds each "slow" fake model takes
LOSER_DELAY = 3.0  # a race's loser would answer after this long, were it not aborted


@pytest.fixture
def all_wires(fake_server, provider_settings) -> FakeServer:
    return point_all_providers_at(fake_server, provider_settings)


def run(models: list[dict[str, Any]], mode: str, *, resolver=get_adapter, timeout: float = 10.0, **kwargs: Any):
    return dispatch(models, mode, prompt="Say hi", system="Be brief.", timeout_seconds=timeout, resolver=resolver,
                    **kwargs)


# --- parallel --------------------------------------------------------------------------


def test_parallel_calls_all_three_sdks_at_once(all_wires: FakeServer) -> None:
    script(all_wires, {
        "gpt-a": [ok(OPENAI, "from openai", delay=SLOW, request_id="req-a")],
        "claude-b": [ok(ANTHROPIC, "from claude", delay=SLOW)],
        "gemini-c": [ok(GEMINI, "from gemini", delay=SLOW)],
    })

    result = run(THREE, "parallel")

    requests = all_wires.requests
    assert len(requests) == 3
    # The property, not a stopwatch: every call started before any was answered.
    assert max(r.started for r in requests) < min(r.finished for r in requests)
    assert result.ok and result.output == "from openai" and result.chosen == "openai:gpt-a"
    assert result.outputs == {"openai:gpt-a": "from openai", "anthropic:claude-b": "from claude",
                              "gemini:gemini-c": "from gemini"}
    assert [(r["provider"], r["model"], r["status"]) for r in result.model_outputs] == [
        ("openai", "gpt-a", "ok"), ("anthropic", "claude-b", "ok"), ("gemini", "gemini-c", "ok")]
    first = result.model_outputs[0]
    assert first["request_id"] == "req-a" and first["finish_reason"] and first["latency_ms"] >= SLOW * 1000 * 0.9
    assert set(first) >= {"provider", "model", "status", "content", "tokens", "latency_ms", "retries", "error",
                          "warnings", "finish_reason", "request_id"}
    # tokens: every call's usage, summed (11+4, 12+5, 13+6)
    assert result.tokens == {"input": 36, "output": 15, "total": 51}
    # each model got its own parameters and the shared prompt and system
    assert calls_to(all_wires, "gpt-a")[0].json["temperature"] == 0.1
    assert "temperature" not in calls_to(all_wires, "claude-b")[0].json
    assert all("Say hi" in r.raw_body.decode() and "Be brief." in r.raw_body.decode() for r in requests)


def test_parallel_output_is_the_first_success_in_list_order_not_the_fastest(all_wires: FakeServer) -> None:
    script(all_wires, {
        "gpt-a": [fail(OPENAI, 500, "boom")],
        "claude-b": [ok(ANTHROPIC, "slow claude", delay=SLOW)],
        "gemini-c": [ok(GEMINI, "fast gemini")],
    })

    result = run(THREE, "parallel")

    assert result.ok and result.output == "slow claude" and result.chosen == "anthropic:claude-b"
    assert result.outputs["openai:gpt-a"] is None
    assert result.model_outputs[0]["status"] == "error"
    assert result.model_outputs[0]["error"]["type"] == "ProviderUnavailable"
    assert result.warnings == ["openai:gpt-a failed (ProviderUnavailable): OpenAI is unavailable (HTTP 500): boom"]


def test_parallel_fails_only_when_every_model_fails_and_names_each_error(all_wires: FakeServer) -> None:
    script(all_wires, {
        "gpt-a": [fail(OPENAI, 500, "down")],
        "claude-b": [fail(ANTHROPIC, 400, "bad input")],
        "gemini-c": [fail(GEMINI, 401, "who are you")],
    })

    result = run(THREE, "parallel")

    assert not result.ok and result.output is None
    error = result.error
    assert error["type"] == ALL_FAILED
    assert [(e["key"], e["type"]) for e in error["details"]["errors"]] == [
        ("openai:gpt-a", "ProviderUnavailable"), ("anthropic:claude-b", "BadRequest"),
        ("gemini:gemini-c", "InvalidCredentials")]
    for text in ("openai:gpt-a", "down", "anthropic:claude-b", "bad input", "gemini:gemini-c", "GEMINI_API_KEY"):
        assert text in error["message"]
    assert result.retryable  # one of them (the 500) is worth another attempt
    assert len(result.warnings) == 3
    assert len(all_wires.requests) == 3  # one call per model, no retries inside the dispatch


def test_all_failing_the_same_way_keeps_that_error_type_for_the_retry_policy(all_wires: FakeServer) -> None:
    script(all_wires, {
        "gpt-a": [Reply(429, OPENAI.error(429, "slow down"), {"Retry-After": "2"})],
        "claude-b": [Reply(429, ANTHROPIC.error(429, "later"), {"retry-after-ms": "5000"})],
    })

    result = run(THREE[:2], "fallback")

    assert result.error["type"] == "RateLimited"
    assert result.retryable
    assert result.retry_after == 5.0  # the next attempt calls both again: wait as long as the slowest asks


def test_an_unknown_provider_fails_that_model_only(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [ok(OPENAI, "fine")]})

    result = run([{"provider": "nope", "model": "x"}, THREE[0]], "parallel")

    assert result.ok and result.output == "fine"
    assert result.model_outputs[0]["error"]["type"] == UnknownProvider.type
    assert "nope:x failed (UnknownProvider)" in result.warnings[0]


# --- fallback --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "ProviderUnavailable"), (400, "BadRequest"), (401, "InvalidCredentials")],
    ids=["500", "400", "401"],
)
def test_fallback_moves_past_a_failing_first_model(all_wires: FakeServer, status: int, error_type: str) -> None:
    script(all_wires, {"gpt-a": [fail(OPENAI, status, "first one broke")], "claude-b": [ok(ANTHROPIC, "second")],
                       "gemini-c": [ok(GEMINI, "never asked")]})

    result = run(THREE, "fallback")

    assert result.ok and result.output == "second" and result.chosen == "anthropic:claude-b"
    assert [len(calls_to(all_wires, m)) for m in ("gpt-a", "claude-b", "gemini-c")] == [1, 1, 0]
    first, second = calls_to(all_wires, "gpt-a")[0], calls_to(all_wires, "claude-b")[0]
    assert first.finished <= second.started  # in order, one after the other
    assert [r["status"] for r in result.model_outputs] == ["error", "ok"]  # the third was never called
    assert result.model_outputs[0]["error"]["type"] == error_type
    assert result.outputs == {"openai:gpt-a": None, "anthropic:claude-b": "second", "gemini:gemini-c": None}
    [warning] = result.warnings
    assert warning.startswith("openai:gpt-a failed")
    if status == 401:
        assert "authentication problem (InvalidCredentials)" in warning and "OPENAI_API_KEY" in warning


def test_fallback_stops_at_the_first_success(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [ok(OPENAI, "first")]})

    result = run(THREE, "fallback")

    assert result.output == "first" and len(all_wires.requests) == 1 and result.warnings == []
    assert len(result.model_outputs) == 1


def test_fallback_over_missing_key_says_so_and_makes_no_call_for_it(fake_server, provider_settings) -> None:
    provider_settings(**ANTHROPIC.settings(fake_server))  # no OPENAI_API_KEY
    script(fake_server, {"claude-b": [ok(ANTHROPIC, "claude here")]})

    result = run(THREE[:2], "fallback")

    assert result.output == "claude here"
    assert "authentication problem (MissingCredentials)" in result.warnings[0]
    assert "OPENAI_API_KEY" in result.warnings[0]
    assert len(fake_server.requests) == 1


# --- race ------------------------------------------------------------------------------


def test_race_keeps_the_first_good_answer_and_aborts_the_others(all_wires: FakeServer) -> None:
    script(all_wires, {
        "gpt-a": [ok(OPENAI, "slow openai", delay=LOSER_DELAY)],
        "claude-b": [ok(ANTHROPIC, "quick claude", delay=0.05)],
        "gemini-c": [ok(GEMINI, "slow gemini", delay=LOSER_DELAY)],
    })

    result = run(THREE, "race")

    assert result.ok and result.output == "quick claude" and result.chosen == "anthropic:claude-b"
    losers = [calls_to(all_wires, "gpt-a")[0], calls_to(all_wires, "gemini-c")[0]]
    # Aborted for real: the server sees each loser's connection closed, its answer never sent.
    assert wait_until(lambda: all(request.disconnected is not None for request in losers))
    assert all(request.aborted for request in losers)
    assert calls_to(all_wires, "claude-b")[0].finished is not None
    by_model = {r["model"]: r for r in result.model_outputs}
    assert by_model["claude-b"]["status"] == "ok"
    for model in ("gpt-a", "gemini-c"):
        assert by_model[model]["status"] == "error"
        assert by_model[model]["error"]["type"] == CANCELLED
        assert "anthropic:claude-b answered first" in by_model[model]["error"]["message"]
        assert by_model[model]["tokens"] == {"input": 0, "output": 0, "total": 0}
    assert result.warnings == []  # being beaten is not a failure
    assert result.outputs == {"openai:gpt-a": None, "anthropic:claude-b": "quick claude", "gemini:gemini-c": None}


def test_race_waits_past_a_quick_failure_for_a_good_answer(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [fail(OPENAI, 503, "busy")], "claude-b": [ok(ANTHROPIC, "worth the wait", delay=SLOW)]})

    result = run(THREE[:2], "race")

    assert result.output == "worth the wait"
    assert [r["status"] for r in result.model_outputs] == ["error", "ok"]
    assert result.warnings[0].startswith("openai:gpt-a failed (ProviderUnavailable)")


def test_race_rejects_an_answer_that_does_not_pass_accept(all_wires: FakeServer) -> None:
    import json

    script(all_wires, {"gpt-a": [ok(OPENAI, "not json")], "claude-b": [ok(ANTHROPIC, '{"a": 1}', delay=SLOW)]})

    result = run(THREE[:2], "race", accept=json.loads)

    assert result.output == {"a": 1}
    assert result.model_outputs[0]["status"] == "error" and result.model_outputs[0]["content"] == "not json"
    assert result.model_outputs[0]["tokens"]["total"] == 15  # answered, so it was paid for
    assert result.tokens["total"] == 15 + 17


def test_race_between_echo_models_cancels_the_slow_one() -> None:
    models = [{"provider": "echo", "model": "slow", "delay_ms": 5000}, {"provider": "echo", "model": "fast"}]
    started = time.monotonic()

    result = run(models, "race")

    assert time.monotonic() - started < 4  # the slow echo's sleep was cancelled, not waited out
    assert result.chosen == "echo:fast" and result.output == "Say hi"
    assert result.model_outputs[0]["error"]["type"] == CANCELLED


# --- rate limits, sync-only adapters, pooling --------------------------------------------


def test_each_model_call_takes_a_slot_of_its_providers_rate_limit(all_wires: FakeServer, settings) -> None:
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": ""}  # this process's budget
    script(all_wires, {"gpt-a": [ok(OPENAI, "one", delay=0.2)], "gpt-b": [ok(OPENAI, "two", delay=0.2)]})
    limited = LimitedAdapter(get_adapter("openai"), "rl-dispatch-test", Limit(max_concurrency=1))

    result = run([{"provider": "openai", "model": "gpt-a"}, {"provider": "openai", "model": "gpt-b"}], "parallel",
                 resolver=lambda name: limited)

    assert result.ok and result.outputs == {"openai:gpt-a": "one", "openai:gpt-b": "two"}
    first, second = sorted(all_wires.requests, key=lambda r: r.started)
    assert first.finished <= second.started  # max 1 concurrent call: the second waited for the slot
    assert get_backend().holders("rl-dispatch-test") == 0


def test_a_cancelled_race_loser_gives_its_rate_limit_slot_back(all_wires: FakeServer, settings) -> None:
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": ""}
    script(all_wires, {"gpt-a": [ok(OPENAI, "slow", delay=LOSER_DELAY)], "claude-b": [ok(ANTHROPIC, "quick")]})
    limited_openai = LimitedAdapter(get_adapter("openai"), "rl-race-test", Limit(max_concurrency=5))

    result = run(THREE[:2], "race", resolver=lambda name: limited_openai if name == "openai" else get_adapter(name))

    assert result.chosen == "anthropic:claude-b"
    assert get_backend().holders("rl-race-test") == 0


class SyncOnlyAdapter:
    """A custom adapter with no ``acomplete``: the dispatcher runs it in a thread."""

    name = "sync-only"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        import threading

        self.threads.append(threading.current_thread().name)
        time.sleep(0.05)
        return ModelResponse(content=f"sync {request.model}", tokens={"input": 1, "output": 1, "total": 2},
                             latency_ms=50)


def test_adapters_without_acomplete_still_run_concurrently() -> None:
    adapter = SyncOnlyAdapter()

    result = run([{"provider": "sync-only", "model": "a"}, {"provider": "sync-only", "model": "b"}], "parallel",
                 resolver=lambda name: adapter)

    assert result.outputs == {"sync-only:a": "sync a", "sync-only:b": "sync b"}
    assert result.tokens["total"] == 4


def test_the_same_model_twice_gets_distinct_output_keys() -> None:
    models = [{"provider": "echo", "model": "echo"}, {"provider": "echo", "model": "echo"}]

    result = run(models, "parallel")

    assert list(result.outputs) == ["echo:echo", "echo:echo#2"]


def test_async_clients_are_reused_across_dispatches(all_wires: FakeServer) -> None:
    script(all_wires, {"gpt-a": [ok(OPENAI, "1"), ok(OPENAI, "2")]})

    run(THREE[:1] + [{"provider": "echo", "model": "echo"}], "parallel")
    run(THREE[:1] + [{"provider": "echo", "model": "echo"}], "parallel")

    first, second = calls_to(all_wires, "gpt-a")
    assert first.client_port == second.client_port  # one pooled keep-alive connection, not a new one per step


def test_dispatch_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="parallel, fallback, race"):
        run(THREE, "roundrobin")


def test_the_dispatch_loop_is_one_daemon_thread_per_process() -> None:
    run([{"provider": "echo", "model": "echo"}], "parallel")
    loop_thread = dispatcher._loop_thread()
    run([{"provider": "echo", "model": "echo"}], "race")
    assert dispatcher._loop_thread() is loop_thread and loop_thread.thread.daemon
