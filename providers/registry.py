"""Pick an adapter by provider name. New providers: one module plus one ``register`` call."""
from __future__ import annotations

import importlib
import threading

from .errors import UnknownProvider
from .types import ProviderAdapter

_adapters: dict[str, ProviderAdapter] = {}
_lock = threading.Lock()
_loaded = False


def register(adapter: ProviderAdapter) -> ProviderAdapter:
    _adapters[adapter.name] = adapter
    return adapter


def _load_builtin() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        # Each registers itself. The SDKs are imported on first use, not here.
        from .adapters import anthropic, echo, gemini, openai  # noqa: F401

        try:
            from django.conf import settings

            extra = settings.PROMPTPILOT.get("PROVIDER_MODULES", [])
        except Exception:  # outside Django (engine unit tests, benchmarks)
            extra = []
        for module in extra:
            importlib.import_module(module)
        _loaded = True


def get_adapter(name: str) -> ProviderAdapter:
    _load_builtin()
    try:
        return _adapters[name]
    except KeyError:
        pass
    # --- admin-defined OpenAI-compatible connections (providers/connections.py) ---
    from .connections import connection_adapter, connection_names

    adapter = connection_adapter(name)
    if adapter is not None:
        return adapter
    known = ", ".join(sorted({*_adapters, *connection_names()})) or "none"
    # --- end connections ---
    raise UnknownProvider(f'Unknown provider "{name}". Known providers: {known}.')


def known_providers() -> list[str]:
    _load_builtin()
    return sorted(_adapters)
