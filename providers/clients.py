"""SDK clients, created once per process and reused, so calls share connection pools.

Keyed by (provider, base URL, a fingerprint of the key): a changed key or base URL gets
a new client on the next call; the same ones reuse the pooled connections (TLS
handshakes and all) of every earlier call. Safe to call from many threads.
"""
from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Bounded so that many rotated keys or admin-defined connections cannot grow it forever.
# An evicted client is not closed: another thread may still be using it; its pooled
# connections close when it is garbage-collected.
MAX_CLIENTS = 64

_clients: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
_lock = threading.Lock()


def _fingerprint(api_key: str) -> str:
    # The cache key never holds the key itself (it may end up in a repr or a log line).
    return hashlib.sha256(api_key.encode()).hexdigest()


def get_client(provider: str, base_url: str, api_key: str, factory: Callable[[], T]) -> T:
    """The cached client for (provider, base_url, api_key), made by ``factory`` the first time."""
    key = (provider, base_url, _fingerprint(api_key))
    # NOTE: one lock around look-up and creation, so two threads never build two clients
    # for the same key; creation happens once per key, so the lock is almost never contended.
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = factory()
            _clients[key] = client
            while len(_clients) > MAX_CLIENTS:
                _clients.popitem(last=False)
        else:
            _clients.move_to_end(key)
        return client


# Async SDK clients (AsyncOpenAI, AsyncAnthropic) pool connections that belong to the
# event loop that opened them: one client per (loop, provider, base URL, key). In
# practice there is one loop per process (providers/dispatcher.py runs every
# multi-model dispatch on it), so these pool across steps like the sync ones.
_async_clients: OrderedDict[tuple[asyncio.AbstractEventLoop, str, str, str], Any] = OrderedDict()


def get_async_client(provider: str, base_url: str, api_key: str, factory: Callable[[], T]) -> T:
    """The cached async client for the running event loop, made by ``factory`` the first time."""
    loop = asyncio.get_running_loop()
    key = (loop, provider, base_url, _fingerprint(api_key))
    with _lock:
        client = _async_clients.get(key)
        if client is None:
            for stale in [k for k in _async_clients if k[0].is_closed()]:
                del _async_clients[stale]  # a closed loop's pools can never be used again
            client = factory()
            _async_clients[key] = client
            while len(_async_clients) > MAX_CLIENTS:
                _async_clients.popitem(last=False)
        else:
            _async_clients.move_to_end(key)
        return client


def clear_clients() -> None:
    """Forget every cached client (tests; or after rotating keys to drop the old pools)."""
    with _lock:
        _clients.clear()
        _async_clients.clear()


def cached_client_count() -> int:
    with _lock:
        return len(_clients)


def worker_concurrency() -> int:
    """How many step attempts this process may run at once (a worker's thread pool)."""
    from django.conf import settings

    return int(getattr(settings, "CELERY_WORKER_CONCURRENCY", 0) or 0)


def connection_limits() -> Any:
    """HTTP connection pool limits for every SDK client (``httpx2``, which openai,
    anthropic and google-genai share): a kept-alive connection for each step attempt a
    worker process runs at once (``CELERY_WORKER_CONCURRENCY``), and room above it for
    multi-model steps' parallel calls, so a hundred concurrent calls to one provider reuse
    their connections instead of opening new ones (TLS handshakes and all) each time."""
    import httpx2

    concurrency = worker_concurrency()
    return httpx2.Limits(max_connections=max(1000, 4 * concurrency),
                         max_keepalive_connections=max(100, concurrency))
