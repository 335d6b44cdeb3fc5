"""Admin-defined OpenAI-compatible connections, resolved by name like built-in providers.

``registry.get_adapter(name)`` asks here when ``name`` is not a built-in: an active
``ProviderConnection`` of that name becomes an ``OpenAICompatibleAdapter(name, base_url,
api_key)``, built once per (name, base URL, stored key) and reused, so its SDK client
and connection pool are too. Editing the connection's URL or key builds a new one on
the next call (within ``PROVIDER_CONFIG_CACHE_SECONDS`` in other processes).

Django is imported lazily: the registry stays importable by the framework-free engine,
and outside Django (engine unit tests, benchmarks) there are simply no connections.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import MissingCredentials, ProviderUnavailable, UnknownProvider
from .types import ProviderAdapter

logger = logging.getLogger(__name__)

DOCS = "docs/PROVIDERS.md#openai-compatible"
MAX_ADAPTERS = 64  # bounded: renamed or re-keyed connections must not grow it forever

AdapterFactory = Callable[[str, str, str], ProviderAdapter]


@dataclass(frozen=True)
class ConnectionEntry:
    name: str
    base_url: str
    api_key_encrypted: str
    is_active: bool


def _load_connections() -> dict[str, ConnectionEntry]:
    from .models import ProviderConnection

    return {
        row.name: ConnectionEntry(row.name, row.base_url.strip(), row.api_key_encrypted, row.is_active)
        for row in ProviderConnection.objects.all()
    }


_snapshot: Any = None
_adapters: OrderedDict[tuple[AdapterFactory, str, str, str], ProviderAdapter] = OrderedDict()
_lock = threading.Lock()


def _connections() -> dict[str, ConnectionEntry] | None:
    """Every connection by name; None when Django or its database is not there to ask."""
    global _snapshot
    try:
        from django.apps import apps

        if not apps.ready:
            return None
        from django.db import DatabaseError

        from .models import ConfigSnapshot
    except Exception:  # Django not installed or not configured: the engine on its own
        return None
    if _snapshot is None:
        _snapshot = ConfigSnapshot(_load_connections)
    try:
        return _snapshot.get()
    except DatabaseError as exc:
        # Retryable: a database blip must not fail a step for good as "unknown provider".
        raise ProviderUnavailable(
            f"Could not read the OpenAI-compatible connections from the database: {exc}",
            details={"docs": DOCS},
        ) from exc
    except RuntimeError:  # e.g. a test that forbids database access: no connections
        logger.debug("connections.unreadable", exc_info=True)
        return None


def connection_names() -> list[str]:
    """Names of the active connections ([] when they cannot be read)."""
    try:
        found = _connections() or {}
    except ProviderUnavailable:
        return []
    return sorted(name for name, entry in found.items() if entry.is_active)


def _default_factory(name: str, base_url: str, api_key: str) -> ProviderAdapter:
    from .adapters.openai import OpenAICompatibleAdapter

    return OpenAICompatibleAdapter(name, base_url, api_key)


def connection_adapter(name: str, *, factory: AdapterFactory | None = None) -> ProviderAdapter | None:
    """The adapter of the active connection ``name``; None when there is no such connection.

    Raises ``UnknownProvider`` for an inactive connection and ``MissingCredentials``
    when its stored key cannot be decrypted (the encryption key changed).
    """
    entry = (_connections() or {}).get(name)
    if entry is None:
        return None
    if not entry.is_active:
        raise UnknownProvider(
            f'The connection "{name}" is inactive: activate it in admin (OpenAI-compatible connections) '
            "or use another provider.",
            details={"provider": name, "docs": DOCS},
        )
    make = factory or _default_factory
    cache_key = (make, name, entry.base_url, hashlib.sha256(entry.api_key_encrypted.encode()).hexdigest())
    with _lock:
        adapter = _adapters.get(cache_key)
        if adapter is not None:
            _adapters.move_to_end(cache_key)
            return adapter
    adapter = make(name, entry.base_url, _decrypt(entry))
    with _lock:
        adapter = _adapters.setdefault(cache_key, adapter)  # a racing thread's twin is dropped
        while len(_adapters) > MAX_ADAPTERS:
            _adapters.popitem(last=False)
    return adapter


def _decrypt(entry: ConnectionEntry) -> str:
    from promptpilot.common import crypto

    from .models import API_KEY_PURPOSE

    if not entry.api_key_encrypted:
        return ""
    try:
        return crypto.decrypt(entry.api_key_encrypted, purpose=API_KEY_PURPOSE)
    except crypto.DecryptionError as exc:
        raise MissingCredentials(
            f'The API key of connection "{entry.name}" cannot be decrypted: PROMPTPILOT_SECRETS_KEY (or '
            f"DJANGO_SECRET_KEY) changed since it was saved. Enter the key again in admin. See {DOCS}.",
            details={"provider": entry.name, "variable": f'the API key of connection "{entry.name}"', "docs": DOCS},
        ) from exc


def clear_cache() -> None:
    """Forget connections and their adapters (tests; they reload on the next call anyway)."""
    with _lock:
        _adapters.clear()
    if _snapshot is not None:
        _snapshot.clear()
