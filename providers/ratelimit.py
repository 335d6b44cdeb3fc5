"""Rate limits shared by every worker: per provider (or connection) name, an optional
cap on calls in flight and on calls started per minute.

Limits live in the ``ProviderLimit`` table (admin). When Redis is configured
(``REDIS_URL``, else a ``redis://`` broker) every worker process on every machine shares
one budget through it:

- concurrency is a semaphore of *leases*: a sorted set of holders scored by expiry
  time. A holder renews its lease while its call runs; a worker killed mid-call stops
  renewing, and its slot frees itself within ``LEASE_SECONDS``;
- requests per minute is a sliding window: a sorted set of start times over the last
  60 seconds.

One Lua script checks and takes both atomically, on Redis's clock (worker clocks may
disagree). Without Redis (the embedded default) the same budgets hold per worker
*process*, with threads waiting on a condition variable.

``acquire`` waits for a slot, bounded by its ``timeout``; out of time, it raises
``RateLimited`` (retryable, with ``retry_after``, ``details.limited_by: "ProviderLimit"``).
A step's call waits only briefly (``RATE_LIMIT_HOLD_SECONDS``): the orchestrator then
defers the attempt as a Celery countdown instead of holding a worker thread, until the
step has waited ``RATE_LIMIT_MAX_WAIT_SECONDS`` in all (``workflows.engine.retry``). The orchestrator
resolves adapters through ``limited_adapter``, so no adapter knows about any of this.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import RateLimited
from .models import ConfigSnapshot, ProviderLimit
from .registry import get_adapter
from .types import ModelRequest, ModelResponse, ProviderAdapter

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
# A running call's slot lasts this long unless renewed (every third of it): how soon a
# killed worker's slot comes back.
LEASE_SECONDS = 15.0
# Waiting for a concurrency slot polls Redis between these intervals (with jitter).
POLL_MIN_SECONDS, POLL_MAX_SECONDS = 0.02, 0.25
# retry_after suggested when no concurrency slot freed in time (nothing better is known).
CONCURRENCY_RETRY_AFTER = 1.0
KEY_PREFIX = "promptpilot:ratelimit:"
# A call that waited at least this long for its slot says so in its warnings.
WAIT_WARNING_SECONDS = 1.0


@dataclass(frozen=True)
class Limit:
    max_concurrency: int | None = None
    requests_per_minute: int | None = None

    def __bool__(self) -> bool:
        return bool(self.max_concurrency or self.requests_per_minute)


@dataclass(frozen=True)
class Attempt:
    """One try at taking a slot: ``acquired``, or how long until the RPM window frees one
    (``wait_seconds``; None when only concurrency is full and no one knows)."""

    acquired: bool
    wait_seconds: float | None = None


class Backend(Protocol):
    def try_acquire(self, key: str, limit: Limit, token: str, lease_seconds: float) -> Attempt: ...

    def renew(self, key: str, token: str, lease_seconds: float) -> bool: ...

    def release(self, key: str, token: str) -> None: ...

    def wait(self, seconds: float) -> None: ...


# --- configuration ---------------------------------------------------------------------


def _load_limits() -> dict[str, Limit]:
    return {
        row.provider: Limit(row.max_concurrency, row.requests_per_minute)
        for row in ProviderLimit.objects.all()
        if row.max_concurrency or row.requests_per_minute
    }


_limits: ConfigSnapshot[dict[str, Limit]] = ConfigSnapshot(_load_limits)


def limit_for(provider_key: str) -> Limit | None:
    """The budget of ``provider_key`` (a provider or connection name), or None."""
    return _limits.get().get(provider_key)


def clear_cache() -> None:
    _limits.clear()


def _settings(key: str, default: Any) -> Any:
    from django.conf import settings

    return settings.PROMPTPILOT.get(key, default)


# --- Redis -----------------------------------------------------------------------------

# KEYS: concurrency zset, rpm zset. ARGV: token, max_concurrency (0: none), rpm (0: none),
# lease ms, window ms. Returns {1, 0} when taken, {0, ms until the window frees a request
# (-1 when only concurrency is full)} when not. Nothing is written unless both allow it.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, maxc, rpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local wait = nil
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= maxc then wait = -1 end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    wait = math.max(wait or -1, tonumber(oldest[2]) + window - now, 1)
  end
end
if wait then return {0, wait} end
if maxc > 0 then
  redis.call('ZADD', KEYS[1], now + lease, token)
  redis.call('PEXPIRE', KEYS[1], lease * 2)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[2], now, token)
  redis.call('PEXPIRE', KEYS[2], window * 2)
end
return {1, 0}
"""

# KEYS: concurrency zset. ARGV: token, lease ms. 1 when renewed, 0 when the lease was lost.
_RENEW = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
"""


class RedisBackend:
    """Budgets shared by every process that talks to the same Redis database."""

    renews_leases = True

    def __init__(self, client: Any, *, window_seconds: float = WINDOW_SECONDS, prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.window_ms = int(window_seconds * 1000)
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisBackend:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2), **kwargs)

    def _keys(self, key: str) -> tuple[str, str]:
        # {key} is a Redis Cluster hash tag: both sets live on one node, as the script needs.
        return f"{self.prefix}{{{key}}}:concurrency", f"{self.prefix}{{{key}}}:rpm"

    def try_acquire(self, key: str, limit: Limit, token: str, lease_seconds: float) -> Attempt:
        taken, wait_ms = self._acquire(
            keys=list(self._keys(key)),
            args=[token, limit.max_concurrency or 0, limit.requests_per_minute or 0,
                  int(lease_seconds * 1000), self.window_ms],
        )
        if int(taken):
            return Attempt(True)
        return Attempt(False, None if int(wait_ms) < 0 else int(wait_ms) / 1000)

    def renew(self, key: str, token: str, lease_seconds: float) -> bool:
        return bool(self._renew(keys=[self._keys(key)[0]], args=[token, int(lease_seconds * 1000)]))

    def release(self, key: str, token: str) -> None:
        # The RPM entry stays: the request was started, and counts for the whole window.
        self.client.zrem(self._keys(key)[0], token)

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def holders(self, key: str) -> int:
        """Leases currently held (expired ones included until the next acquire prunes them)."""
        return int(self.client.zcard(self._keys(key)[0]))


# --- in-process fallback ----------------------------------------------------------------


@dataclass
class _LocalState:
    held: set[str] = field(default_factory=set)
    starts: deque[float] = field(default_factory=deque)


class LocalBackend:
    """The same budgets within one process (no Redis: the embedded default)."""

    renews_leases = False  # a thread that dies takes its process with it: no lease to expire

    def __init__(self, *, window_seconds: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window_seconds
        self.clock = clock
        self._cond = threading.Condition()
        self._state: dict[str, _LocalState] = {}

    def try_acquire(self, key: str, limit: Limit, token: str, lease_seconds: float) -> Attempt:
        with self._cond:
            state = self._state.setdefault(key, _LocalState())
            now = self.clock()
            while state.starts and state.starts[0] <= now - self.window:
                state.starts.popleft()
            wait: float | None = None
            blocked = False
            if limit.max_concurrency and len(state.held) >= limit.max_concurrency:
                blocked = True
            if limit.requests_per_minute and len(state.starts) >= limit.requests_per_minute:
                blocked = True
                wait = max(state.starts[0] + self.window - now, 0.001)
            if blocked:
                return Attempt(False, wait)
            if limit.max_concurrency:
                state.held.add(token)
            if limit.requests_per_minute:
                state.starts.append(now)
            return Attempt(True)

    def renew(self, key: str, token: str, lease_seconds: float) -> bool:
        return True

    def release(self, key: str, token: str) -> None:
        with self._cond:
            state = self._state.get(key)
            if state is not None:
                state.held.discard(token)
            self._cond.notify_all()

    def wait(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait(seconds)  # woken early by a release

    def holders(self, key: str) -> int:
        with self._cond:
            return len(self._state.get(key, _LocalState()).held)


_local = LocalBackend()
_redis_backends: dict[str, RedisBackend] = {}
_backend_lock = threading.Lock()


def get_backend() -> Backend:
    """Redis when ``PROMPTPILOT["RATE_LIMIT_REDIS_URL"]`` is set, else this process's fallback."""
    url = _settings("RATE_LIMIT_REDIS_URL", "")
    if not url:
        return _local
    backend = _redis_backends.get(url)
    if backend is None:
        with _backend_lock:
            backend = _redis_backends.get(url) or RedisBackend.from_url(url)
            _redis_backends[url] = backend
    return backend


# --- acquiring ---------------------------------------------------------------------------


class _Renewer:
    """Keeps a Redis lease alive while the call runs."""

    def __init__(self, backend: Backend, key: str, token: str, lease_seconds: float) -> None:
        self.backend, self.key, self.token, self.lease = backend, key, token, lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ratelimit-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                if not self.backend.renew(self.key, self.token, self.lease):
                    logger.warning("ratelimit.lease_lost", extra={"provider": self.key})
                    return
            except Exception:  # Redis blip: try again next tick; the lease is still valid
                logger.warning("ratelimit.renew_failed", extra={"provider": self.key}, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Slot:
    """What ``acquire`` yields: how long it waited, and warnings for the model output."""

    waited_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@contextmanager
def acquire(
    provider_key: str,
    timeout: float,
    *,
    limit: Limit | None = None,
    backend: Backend | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> Iterator[Slot]:
    """Hold a slot of ``provider_key``'s budget for the duration of the block.

    Waits up to ``timeout`` seconds for one, then raises ``RateLimited``. ``limit``
    defaults to the ``ProviderLimit`` row; no limit means no wait and no Redis call.
    If Redis is unreachable the call goes ahead unlimited, with a warning: the budget
    protects the provider, a Redis outage should not stop every run.
    """
    limit = limit if limit is not None else limit_for(provider_key)
    if not limit:
        yield Slot()
        return
    backend = backend or get_backend()
    token = uuid.uuid4().hex
    started = time.monotonic()
    deadline = started + max(timeout, 0.0)
    poll = POLL_MIN_SECONDS
    unavailable = ""
    while True:
        try:
            attempt = backend.try_acquire(provider_key, limit, token, lease_seconds)
        except Exception:  # redis.ConnectionError, TimeoutError... (details in the log, not in outputs)
            logger.warning("ratelimit.unavailable", extra={"provider": provider_key}, exc_info=True)
            unavailable = f"Rate limit of {provider_key} not enforced: Redis could not be reached."
            break
        if attempt.acquired:
            break
        remaining = deadline - time.monotonic()
        # Out of time, or the window frees a request only after the deadline: give up now.
        if remaining <= 0 or (attempt.wait_seconds is not None and attempt.wait_seconds > remaining):
            retry_after = attempt.wait_seconds if attempt.wait_seconds is not None else CONCURRENCY_RETRY_AFTER
            raise RateLimited(
                f"{provider_key}: no free slot in its shared rate limit within {timeout:g} s "
                f"({_describe(limit)}); retry later.",
                retry_after=round(retry_after, 3),
                details={"provider": provider_key, "limited_by": "ProviderLimit",
                         "max_concurrency": limit.max_concurrency, "requests_per_minute": limit.requests_per_minute},
            )
        if attempt.wait_seconds is not None:
            # The window is full: nothing can start before its oldest entry leaves it.
            pause = attempt.wait_seconds + random.uniform(0, POLL_MIN_SECONDS)
        else:
            # Concurrency is full: a slot frees whenever a call ends. Poll, with jitter so
            # that waiters do not knock in step.
            pause = random.uniform(POLL_MIN_SECONDS, poll)
            poll = min(poll * 2, POLL_MAX_SECONDS)
        backend.wait(min(pause, remaining))
    if unavailable:
        yield Slot(waited_seconds=time.monotonic() - started, warnings=[unavailable])
        return
    slot = Slot(waited_seconds=time.monotonic() - started)
    if slot.waited_seconds >= POLL_MAX_SECONDS:
        logger.info("ratelimit.waited", extra={"provider": provider_key, "waited_ms": int(slot.waited_seconds * 1000)})
    renewer = (
        _Renewer(backend, provider_key, token, lease_seconds)
        if limit.max_concurrency and getattr(backend, "renews_leases", False)
        else None
    )
    try:
        yield slot
    finally:
        if renewer is not None:
            renewer.stop()
        if limit.max_concurrency:
            try:
                backend.release(provider_key, token)
            except Exception:  # the lease expires on its own
                logger.warning("ratelimit.release_failed", extra={"provider": provider_key}, exc_info=True)


def _describe(limit: Limit) -> str:
    parts = []
    if limit.max_concurrency:
        parts.append(f"max {limit.max_concurrency} concurrent")
    if limit.requests_per_minute:
        parts.append(f"{limit.requests_per_minute} requests/min")
    return ", ".join(parts)


# --- the resolver the orchestrator uses ------------------------------------------------------


@asynccontextmanager
async def acquire_async(
    provider_key: str,
    timeout: float,
    *,
    limit: Limit | None,
    backend: Backend | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> AsyncIterator[Slot]:
    """``acquire`` for a coroutine on an event loop: the wait runs in a worker thread so
    the loop (and every other call on it) goes on meanwhile.

    ``limit`` must be given (None: no limit): looking it up may read the database,
    which the caller does in its own thread before spawning concurrent work. A task
    cancelled while waiting still gives back the slot its thread takes afterwards.
    """
    if not limit:
        yield Slot()
        return
    held = acquire(provider_key, timeout, limit=limit, backend=backend, lease_seconds=lease_seconds)
    entering = asyncio.ensure_future(asyncio.to_thread(held.__enter__))
    try:
        slot = await asyncio.shield(entering)
    except asyncio.CancelledError:
        def give_back(future: asyncio.Future[Slot]) -> None:
            if not future.cancelled() and future.exception() is None:
                held.__exit__(None, None, None)

        entering.add_done_callback(give_back)
        raise
    try:
        yield slot
    finally:
        # NOTE: synchronous on purpose: a release must happen even while this task is
        # being cancelled (a race's losers), and it is one quick Redis call at most.
        held.__exit__(None, None, None)


class LimitedAdapter:
    """``adapter``, with each ``complete`` call holding a slot of its provider's budget."""

    def __init__(self, adapter: ProviderAdapter, provider_key: str, limit: Limit | None = None) -> None:
        self.adapter = adapter
        self.name = provider_key
        # As it was when resolved: the async path runs on the dispatch loop's threads,
        # which must not read the database. (The sync path looks it up at each call.)
        self.limit = limit if limit is not None else limit_for(provider_key)

    def complete(self, request: ModelRequest) -> ModelResponse:
        # NOTE: a thread waits here at most RATE_LIMIT_HOLD_SECONDS; past that RateLimited
        # ends the attempt and the orchestrator defers the step (a countdown, no thread
        # held), up to RATE_LIMIT_MAX_WAIT_SECONDS in all: workflows.engine.retry.slot_deferral.
        with acquire(self.name, self._hold(request)) as slot:
            response = self.adapter.complete(request)
        return self._with_slot_warnings(response, slot)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """``complete`` on an event loop (multi-model steps): one slot per model call."""
        inner = getattr(self.adapter, "acomplete", None)
        if inner is None:
            # A sync-only adapter runs in a thread that holds its own slot throughout.
            return await asyncio.to_thread(self.complete, request)
        async with acquire_async(self.name, self._max_wait(request), limit=self.limit) as slot:
            response = await inner(request)
        return self._with_slot_warnings(response, slot)

    def _max_wait(self, request: ModelRequest) -> float:
        return min(float(request.timeout_seconds), float(_settings("RATE_LIMIT_MAX_WAIT_SECONDS", 30.0)))

    def _hold(self, request: ModelRequest) -> float:
        return min(self._max_wait(request), float(_settings("RATE_LIMIT_HOLD_SECONDS", 1.0)))

    def _with_slot_warnings(self, response: ModelResponse, slot: Slot) -> ModelResponse:
        warnings = list(slot.warnings)
        if slot.waited_seconds >= WAIT_WARNING_SECONDS:
            # latency_ms is the provider's time; say where the rest of the step's time went.
            warnings.append(f"Waited {slot.waited_seconds:.1f} s for a slot in the rate limit of {self.name}.")
        if warnings:
            response.warnings = [*response.warnings, *warnings]
        return response


def limited_adapter(name: str, *, resolve: Callable[[str], ProviderAdapter] = get_adapter) -> ProviderAdapter:
    """``resolve(name)``, wrapped in its shared rate limit when it has one."""
    adapter = resolve(name)
    limit = limit_for(name)
    if not limit:
        return adapter
    return LimitedAdapter(adapter, name, limit)
