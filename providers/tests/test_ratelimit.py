"""providers/ratelimit.py: shared budgets against real Redis, and the in-process fallback."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from providers import ratelimit
from providers.errors import RateLimited
from providers.models import ProviderLimit
from providers.ratelimit import Limit, LimitedAdapter, LocalBackend, RedisBackend, acquire, limited_adapter
from providers.types import ModelRequest, ModelResponse
from workflows.engine.retry import retry_delay
from workflows.engine.runner import run_step
from workflows.engine.types import FAILED, RunContext, StepDefinition

REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture(autouse=True)
def fresh_limits() -> Iterator[None]:
    ratelimit.clear_cache()
    yield
    ratelimit.clear_cache()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"These tests need Redis at {REDIS_URL} ({exc}).", pytrace=False)
    yield client
    client.close()


@pytest.fixture
def redis_backend(redis_client) -> Iterator[RedisBackend]:
    # A prefix of its own rather than FLUSHDB: database 11 may also be the broker of
    # worker tests running in this session, whose queues must survive.
    prefix = f"promptpilot:ratelimit:test-{uuid.uuid4().hex[:8]}:"
    yield RedisBackend(redis_client, prefix=prefix)
    for key in redis_client.scan_iter(f"{prefix}*"):
        redis_client.delete(key)


@pytest.fixture(params=["redis", "local"])
def backend(request):
    """Each backend in turn: the rules are the same, only the scope differs."""
    if request.param == "redis":
        return request.getfixturevalue("redis_backend")
    return LocalBackend()


def _fast_window(backend, seconds: float):
    if isinstance(backend, RedisBackend):
        return RedisBackend(backend.client, prefix=backend.prefix, window_seconds=seconds)
    return LocalBackend(window_seconds=seconds)


# --- concurrency --------------------------------------------------------------------------


def test_concurrency_slots_are_held_until_released(backend):
    limit = Limit(max_concurrency=2)
    assert backend.try_acquire("p", limit, "a", 10).acquired
    assert backend.try_acquire("p", limit, "b", 10).acquired
    third = backend.try_acquire("p", limit, "c", 10)
    assert not third.acquired and third.wait_seconds is None  # no one knows when a call ends
    backend.release("p", "a")
    assert backend.try_acquire("p", limit, "c", 10).acquired


def test_budgets_are_per_provider_key(backend):
    limit = Limit(max_concurrency=1)
    assert backend.try_acquire("openai", limit, "a", 10).acquired
    assert backend.try_acquire("ollama-local", limit, "b", 10).acquired
    assert not backend.try_acquire("openai", limit, "c", 10).acquired


def test_acquire_waits_for_a_slot_to_be_released(backend):
    limit = Limit(max_concurrency=1)
    held = threading.Event()

    def hold() -> None:
        with acquire("p", 1, limit=limit, backend=backend):
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(2)
    started = time.monotonic()
    with acquire("p", 5, limit=limit, backend=backend) as slot:
        waited = time.monotonic() - started
    holder.join()
    assert 0.15 < waited < 3
    assert slot.waited_seconds == pytest.approx(waited, abs=0.05)


def test_acquire_gives_up_with_a_retryable_rate_limited_error(backend):
    limit = Limit(max_concurrency=1)
    assert backend.try_acquire("p", limit, "holder", 30).acquired
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        with acquire("p", 0.2, limit=limit, backend=backend):
            pytest.fail("must not get a slot")
    assert 0.15 < time.monotonic() - started < 2
    assert caught.value.retryable is True
    assert caught.value.retry_after and caught.value.retry_after > 0
    assert caught.value.details["max_concurrency"] == 1 and caught.value.details["limited_by"] == "ProviderLimit"
    assert backend.holders("p") == 1  # the failed waiter took nothing


def test_slots_are_released_when_the_call_raises(backend):
    limit = Limit(max_concurrency=1)
    with pytest.raises(ValueError):
        with acquire("p", 1, limit=limit, backend=backend):
            raise ValueError("the provider call failed")
    assert backend.holders("p") == 0


def test_no_more_calls_in_flight_than_the_limit_under_contention(backend):
    limit = Limit(max_concurrency=2)
    in_flight, peak, lock = 0, 0, threading.Lock()
    errors: list[BaseException] = []

    def call() -> None:
        nonlocal in_flight, peak
        try:
            with acquire("p", 10, limit=limit, backend=backend):
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                time.sleep(0.05)
                with lock:
                    in_flight -= 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert peak == 2


# --- requests per minute ------------------------------------------------------------------


def test_requests_per_window_are_capped_and_the_wait_is_known(backend):
    backend = _fast_window(backend, 1.0)
    limit = Limit(requests_per_minute=3)
    for token in "abc":
        assert backend.try_acquire("p", limit, token, 10).acquired
    blocked = backend.try_acquire("p", limit, "d", 10)
    assert not blocked.acquired
    assert 0 < blocked.wait_seconds <= 1.0


def test_a_request_is_counted_for_the_whole_window_even_after_it_ends(backend):
    backend = _fast_window(backend, 1.0)
    limit = Limit(requests_per_minute=1)
    with acquire("p", 0, limit=limit, backend=backend):
        pass
    with pytest.raises(RateLimited) as caught:
        with acquire("p", 0.1, limit=limit, backend=backend):
            pass
    assert 0.5 < caught.value.retry_after <= 1.0  # until the first request leaves the window
    started = time.monotonic()
    with acquire("p", 3, limit=limit, backend=backend):
        pass
    assert time.monotonic() - started < 1.2


def test_concurrency_and_window_are_taken_together_or_not_at_all(backend):
    backend = _fast_window(backend, 5.0)
    limit = Limit(max_concurrency=1, requests_per_minute=5)
    assert backend.try_acquire("p", limit, "a", 10).acquired
    for token in "bcd":  # concurrency is full: these must not eat the window's budget
        assert not backend.try_acquire("p", limit, token, 10).acquired
    backend.release("p", "a")
    for token in "efgh":
        assert backend.try_acquire("p", limit, token, 10).acquired
        backend.release("p", token)
    assert not backend.try_acquire("p", limit, "i", 10).acquired  # 5 started in the window


# --- Redis specifics ------------------------------------------------------------------------


def test_a_killed_holders_slot_frees_itself_when_its_lease_expires(redis_backend):
    limit = Limit(max_concurrency=1)
    # A worker takes the slot and dies: it never releases nor renews.
    assert redis_backend.try_acquire("p", limit, "dead-worker", 0.3).acquired
    assert not redis_backend.try_acquire("p", limit, "other", 10).acquired
    time.sleep(0.4)
    assert redis_backend.try_acquire("p", limit, "other", 10).acquired


def test_a_running_call_renews_its_lease(redis_backend):
    limit = Limit(max_concurrency=1)
    with acquire("p", 1, limit=limit, backend=redis_backend, lease_seconds=0.3):
        time.sleep(0.9)  # three leases long: only renewals keep the slot
        assert not redis_backend.try_acquire("p", limit, "other", 10).acquired
    assert redis_backend.try_acquire("p", limit, "other", 10).acquired


def test_separate_clients_share_one_budget(redis_client, redis_backend):
    # Two backends with their own connections stand for two worker processes.
    other = RedisBackend(redis.Redis.from_url(REDIS_URL), prefix=redis_backend.prefix)
    limit = Limit(max_concurrency=1)
    assert redis_backend.try_acquire("p", limit, "worker-1", 10).acquired
    assert not other.try_acquire("p", limit, "worker-2", 10).acquired
    redis_backend.release("p", "worker-1")
    assert other.try_acquire("p", limit, "worker-2", 10).acquired


def test_calls_go_ahead_with_a_warning_when_redis_is_unreachable():
    down = RedisBackend(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    with acquire("p", 1, limit=Limit(max_concurrency=1), backend=down) as slot:
        pass
    assert slot.warnings and "not enforced" in slot.warnings[0]


def test_backend_is_redis_when_configured_else_local(settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": ""}
    assert isinstance(ratelimit.get_backend(), LocalBackend)
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": REDIS_URL}
    backend = ratelimit.get_backend()
    assert isinstance(backend, RedisBackend) and ratelimit.get_backend() is backend


# --- configuration and the resolver ---------------------------------------------------------


class RecordingAdapter:
    name = "rl-test"

    def __init__(self, backend=None) -> None:
        self.backend = backend
        self.holders_seen: list[int] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        if self.backend is not None:
            self.holders_seen.append(self.backend.holders("rl-test"))
        return ModelResponse(content="ok", tokens={"input": 1, "output": 1, "total": 2}, latency_ms=1)


def _request(timeout: float = 5) -> ModelRequest:
    return ModelRequest(provider="rl-test", model="m", prompt="hi", timeout_seconds=timeout)


@pytest.mark.django_db
def test_limits_come_from_the_table_and_changes_apply_at_once_in_this_process():
    assert ratelimit.limit_for("rl-test") is None
    row = ProviderLimit.objects.create(provider="rl-test", max_concurrency=2)
    assert ratelimit.limit_for("rl-test") == Limit(max_concurrency=2)
    row.requests_per_minute = 100
    row.save()
    assert ratelimit.limit_for("rl-test") == Limit(max_concurrency=2, requests_per_minute=100)
    row.delete()
    assert ratelimit.limit_for("rl-test") is None


@pytest.mark.django_db
def test_other_processes_changes_apply_after_the_cache_lifetime(settings):
    ratelimit.limit_for("rl-test")  # cached: no limit
    ProviderLimit.objects.bulk_create([ProviderLimit(provider="rl-test", max_concurrency=1)])  # no signal
    assert ratelimit.limit_for("rl-test") is None
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "PROVIDER_CONFIG_CACHE_SECONDS": 0}
    assert ratelimit.limit_for("rl-test") == Limit(max_concurrency=1)


@pytest.mark.django_db
def test_limited_adapter_is_the_adapter_itself_when_there_is_no_limit():
    adapter = RecordingAdapter()
    assert limited_adapter("rl-test", resolve=lambda name: adapter) is adapter


@pytest.mark.django_db
def test_limited_adapter_holds_a_slot_during_the_call(settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": ""}
    ProviderLimit.objects.create(provider="rl-test", max_concurrency=1)
    inner = RecordingAdapter(backend=ratelimit.get_backend())
    wrapped = limited_adapter("rl-test", resolve=lambda name: inner)
    assert isinstance(wrapped, LimitedAdapter) and wrapped.name == "rl-test"
    assert wrapped.complete(_request()).content == "ok"
    assert inner.holders_seen == [1]
    assert ratelimit.get_backend().holders("rl-test") == 0


@pytest.mark.django_db
def test_a_step_that_cannot_get_a_slot_fails_retryable_and_backs_off_by_countdown(settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": "", "RATE_LIMIT_MAX_WAIT_SECONDS": 0.2}
    ProviderLimit.objects.create(provider="rl-test", max_concurrency=1)
    backend = ratelimit.get_backend()
    assert backend.try_acquire("rl-test", Limit(max_concurrency=1), "busy", 60).acquired
    inner = RecordingAdapter()
    try:
        step = StepDefinition(
            name="ask", order=1, type="PROMPT",
            config={"template": "hi", "model": {"provider": "rl-test", "model": "m"}}, timeout_seconds=30,
        )
        started = time.monotonic()
        result = run_step(step, RunContext(inputs={}),
                          providers=lambda name: limited_adapter(name, resolve=lambda _: inner))
        assert time.monotonic() - started < 2  # bounded by RATE_LIMIT_MAX_WAIT_SECONDS, not the step timeout
    finally:
        backend.release("rl-test", "busy")
    assert result.status == FAILED and result.error["type"] == "RateLimited" and result.retryable
    assert inner.holders_seen == []  # the provider was never called
    delay = retry_delay({"max_retries": 2, "jitter": False, "backoff_base_seconds": 0.5},
                        retry_count=0, result=result)
    assert delay is not None and delay >= result.retry_after


@pytest.mark.django_db
def test_a_long_wait_for_a_slot_is_reported_in_the_call_warnings(settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": "", "RATE_LIMIT_HOLD_SECONDS": 5}
    ProviderLimit.objects.create(provider="rl-test", max_concurrency=1)
    backend = ratelimit.get_backend()
    assert backend.try_acquire("rl-test", Limit(max_concurrency=1), "busy", 60).acquired
    threading.Timer(1.1, backend.release, args=("rl-test", "busy")).start()
    response = limited_adapter("rl-test", resolve=lambda name: RecordingAdapter()).complete(_request())
    assert any("Waited 1." in warning and "rate limit of rl-test" in warning for warning in response.warnings)


@pytest.mark.django_db
def test_a_call_holds_its_thread_only_for_the_hold_time_not_the_whole_wait(settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "RATE_LIMIT_REDIS_URL": "",
                            "RATE_LIMIT_HOLD_SECONDS": 0.2, "RATE_LIMIT_MAX_WAIT_SECONDS": 30}
    ProviderLimit.objects.create(provider="rl-test", max_concurrency=1)
    backend = ratelimit.get_backend()
    assert backend.try_acquire("rl-test", Limit(max_concurrency=1), "busy", 60).acquired
    try:
        started = time.monotonic()
        with pytest.raises(RateLimited) as raised:
            limited_adapter("rl-test", resolve=lambda name: RecordingAdapter()).complete(_request())
        held = time.monotonic() - started
    finally:
        backend.release("rl-test", "busy")
    # Well under the 30 s budget: the orchestrator defers the attempt instead (test_slot_deferral.py).
    assert held < 5, held
    assert raised.value.details["limited_by"] == "ProviderLimit" and raised.value.retry_after > 0


def test_a_full_window_gives_up_at_once_when_it_frees_only_after_the_deadline(backend):
    limit = Limit(requests_per_minute=1)
    with ratelimit.acquire("rl-window", 5, limit=limit, backend=backend):
        pass
    started = time.monotonic()
    with pytest.raises(RateLimited) as raised:
        with ratelimit.acquire("rl-window", 5, limit=limit, backend=backend):
            pass
    assert time.monotonic() - started < 1  # no pointless 5 s wait: the window frees in ~60 s
    assert raised.value.retry_after > 50
