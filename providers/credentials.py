"""Provider credentials and base URLs, read from settings at call time.

``settings.PROMPTPILOT["PROVIDERS"]`` maps each environment variable name to its value
(``promptpilot/settings/env.py`` reads the environment; nothing here does). Values are
read on every call, not at import, so a changed setting (or ``override_settings`` in a
test) takes effect on the next call, and a new key gets a new pooled client.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import MissingCredentials

DOCS_PATH = "docs/PROVIDERS.md"


@dataclass(frozen=True)
class ProviderSpec:
    """What error messages need to say about a provider: its name, where its key lives,
    and which section of the docs explains it."""

    name: str  # registry name, e.g. "openai"
    label: str  # human name, e.g. "OpenAI"
    key_variable: str  # e.g. "OPENAI_API_KEY", or 'the API key of connection "local"'
    base_url_variable: str | None  # e.g. "OPENAI_BASE_URL"
    default_base_url: str
    docs_anchor: str  # e.g. "openai"

    @property
    def docs(self) -> str:
        return f"{DOCS_PATH}#{self.docs_anchor}"


@dataclass(frozen=True)
class Credentials:
    api_key: str
    base_url: str

    def __repr__(self) -> str:  # never print a key, even in a traceback or a debugger
        return f"Credentials(api_key=<{len(self.api_key)} chars>, base_url={self.base_url!r})"


OPENAI = ProviderSpec(
    name="openai",
    label="OpenAI",
    key_variable="OPENAI_API_KEY",
    base_url_variable="OPENAI_BASE_URL",
    default_base_url="https://api.openai.com/v1",
    docs_anchor="openai",
)
ANTHROPIC = ProviderSpec(
    name="anthropic",
    label="Anthropic",
    key_variable="ANTHROPIC_API_KEY",
    base_url_variable="ANTHROPIC_BASE_URL",
    default_base_url="https://api.anthropic.com",
    docs_anchor="anthropic",
)
GEMINI = ProviderSpec(
    name="gemini",
    label="Gemini",
    key_variable="GEMINI_API_KEY",
    base_url_variable="GEMINI_BASE_URL",
    default_base_url="https://generativelanguage.googleapis.com",
    docs_anchor="gemini",
)


def provider_settings() -> dict[str, Any]:
    """``settings.PROMPTPILOT["PROVIDERS"]``, or ``{}`` outside a configured Django."""
    try:
        from django.conf import settings

        return dict(settings.PROMPTPILOT.get("PROVIDERS") or {})
    except Exception:  # engine unit tests and benchmarks run without Django settings
        return {}


def credentials_for(spec: ProviderSpec) -> Credentials:
    """The key and base URL for ``spec``; ``MissingCredentials`` (before any HTTP call)
    when the key is not set."""
    configured = provider_settings()
    api_key = str(configured.get(spec.key_variable) or "").strip()
    if not api_key:
        raise MissingCredentials(
            f"{spec.label} needs an API key: set {spec.key_variable} in the environment of the web and "
            f"worker processes, then restart them. How to get one: {spec.docs}.",
            details={"provider": spec.name, "variable": spec.key_variable, "docs": spec.docs},
        )
    base_url = ""
    if spec.base_url_variable:
        base_url = str(configured.get(spec.base_url_variable) or "").strip()
    return Credentials(api_key=api_key, base_url=base_url or spec.default_base_url)
