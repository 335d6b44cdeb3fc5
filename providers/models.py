"""Provider configuration staff edit in admin: prices, shared rate limits, and
OpenAI-compatible connections.

These tables are small and read on every model call, so readers keep a per-process
snapshot (``ConfigSnapshot``) that reloads after ``PROVIDER_CONFIG_CACHE_SECONDS`` or at
once when this process saves or deletes a row. Other processes see a change within
that many seconds.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.signals import post_delete, post_save

from promptpilot.common import crypto
from promptpilot.common.models import TimeStampedModel

API_KEY_PURPOSE = "providers.connections.api_key"


class ModelPrice(models.Model):
    """What one model costs per million tokens, in US dollars."""

    provider = models.CharField(
        "provider", max_length=100,
        help_text='Provider name exactly as step configs spell it: "openai", "anthropic", "gemini", or the name of '
                  "an OpenAI-compatible connection.",
    )
    model = models.CharField(
        "model", max_length=200,
        help_text='Model name exactly as step configs spell it, e.g. "gpt-4o-mini". No wildcards: each model '
                  "(and each dated snapshot you use) needs its own row.",
    )
    input_per_million_usd = models.DecimalField(
        "input price (USD per million tokens)", max_digits=12, decimal_places=6,
        validators=[MinValueValidator(0)],
        help_text="US dollars per 1,000,000 input (prompt) tokens, from the provider's price page.",
    )
    output_per_million_usd = models.DecimalField(
        "output price (USD per million tokens)", max_digits=12, decimal_places=6,
        validators=[MinValueValidator(0)],
        help_text="US dollars per 1,000,000 output (completion) tokens, from the provider's price page.",
    )
    currency_note = models.CharField(
        "note", max_length=200, blank=True, default="",
        help_text='Where the price comes from and what it leaves out, e.g. "list price 2025-06; no batch or '
                  'cache discounts". Costs are always computed in USD.',
    )
    updated_at = models.DateTimeField(
        "updated at", auto_now=True, help_text="When this price was last changed. Past runs keep the cost they got."
    )

    class Meta:
        verbose_name = "model price"
        verbose_name_plural = "model prices"
        ordering = ("provider", "model")
        constraints = [
            models.UniqueConstraint(fields=("provider", "model"), name="providers_modelprice_unique_provider_model"),
            models.CheckConstraint(
                condition=models.Q(input_per_million_usd__gte=0, output_per_million_usd__gte=0),
                name="providers_modelprice_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class ProviderLimit(models.Model):
    """A budget shared by every worker for calls to one provider or connection."""

    provider = models.CharField(
        "provider or connection", max_length=100, unique=True,
        help_text='The provider name as step configs spell it ("openai", "anthropic", "gemini", "echo") or the '
                  "name of an OpenAI-compatible connection. Each name has its own budget.",
    )
    max_concurrency = models.PositiveIntegerField(
        "max concurrent calls", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="At most this many calls in flight at once, across all workers. Empty: no limit.",
    )
    requests_per_minute = models.PositiveIntegerField(
        "requests per minute", null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="At most this many calls started in any 60-second window, across all workers. Empty: no limit.",
    )
    updated_at = models.DateTimeField(
        "updated at", auto_now=True, help_text="When this limit was last changed; workers apply it within seconds."
    )

    class Meta:
        verbose_name = "provider rate limit"
        verbose_name_plural = "provider rate limits"
        ordering = ("provider",)
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_concurrency__isnull=True) | models.Q(max_concurrency__gte=1),
                name="providers_providerlimit_concurrency_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(requests_per_minute__isnull=True) | models.Q(requests_per_minute__gte=1),
                name="providers_providerlimit_rpm_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.provider


def validate_base_url(value: str) -> None:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(
            "Enter the server's base URL with http:// or https://, e.g. http://127.0.0.1:11434/v1 for Ollama."
        )


class ProviderConnection(TimeStampedModel):
    """A named OpenAI-compatible server (Ollama, vLLM, LM Studio, OpenRouter, ...).

    Its ``name`` is used as the provider in step configs:
    ``{"provider": "ollama-local", "model": "llama3.2"}``.
    """

    name = models.SlugField(
        "name", max_length=100, unique=True,
        help_text='Used as the provider in step configs, e.g. "ollama-local". Letters, digits, - and _. Cannot be '
                  "a built-in provider name (openai, anthropic, gemini, echo).",
    )
    base_url = models.CharField(
        "base URL", max_length=500, validators=[validate_base_url],
        help_text="The OpenAI-compatible API root, usually ending in /v1: http://127.0.0.1:11434/v1 (Ollama), "
                  "http://vllm:8000/v1 (vLLM), https://openrouter.ai/api/v1 (OpenRouter).",
    )
    api_key_encrypted = models.TextField(
        "API key (encrypted)", blank=True, default="", editable=False,
        help_text="The API key, Fernet-encrypted with PROMPTPILOT_SECRETS_KEY (else DJANGO_SECRET_KEY). Never shown; "
                  "empty when the server needs no key.",
    )
    is_active = models.BooleanField(
        "active", default=True,
        help_text="Inactive connections are unknown providers: steps that use them fail with UnknownProvider.",
    )

    class Meta:
        verbose_name = "OpenAI-compatible connection"
        verbose_name_plural = "OpenAI-compatible connections"
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)

    def set_api_key(self, api_key: str) -> None:
        """Store ``api_key`` encrypted (an empty string removes it). Call ``save()`` after."""
        api_key = api_key.strip()
        self.api_key_encrypted = crypto.encrypt(api_key, purpose=API_KEY_PURPOSE) if api_key else ""

    def api_key(self) -> str:
        """The decrypted key ("" when none). Raises ``crypto.DecryptionError``."""
        if not self.api_key_encrypted:
            return ""
        return crypto.decrypt(self.api_key_encrypted, purpose=API_KEY_PURPOSE)

    def clean(self) -> None:
        super().clean()
        from .registry import known_providers

        if self.name and self.name in known_providers():
            raise ValidationError({"name": f'"{self.name}" is a built-in provider; choose another name.'})


# --- cached reads ----------------------------------------------------------------------

T = TypeVar("T")

_version = 0
_version_lock = threading.Lock()


def config_version() -> int:
    """Bumped whenever this process saves or deletes a price, limit or connection."""
    return _version


def _bump_version(**_: object) -> None:
    global _version
    with _version_lock:
        _version += 1


for _model in (ModelPrice, ProviderLimit, ProviderConnection):
    post_save.connect(_bump_version, sender=_model, dispatch_uid=f"providers.config_version.{_model.__name__}.save")
    post_delete.connect(
        _bump_version, sender=_model, dispatch_uid=f"providers.config_version.{_model.__name__}.delete"
    )


def _cache_seconds() -> float:
    from django.conf import settings

    return float(settings.PROMPTPILOT.get("PROVIDER_CONFIG_CACHE_SECONDS", 10.0))


class ConfigSnapshot(Generic[T]):
    """``load()``'s result, kept for ``PROVIDER_CONFIG_CACHE_SECONDS``.

    Reloaded sooner when this process changed a row (``config_version``). Readers never
    wait for each other: at worst two threads load the same table at once.
    """

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._loaded_at = float("-inf")
        self._loaded_version = -1

    def get(self) -> T:
        now = time.monotonic()
        version = config_version()
        if self._value is None or version != self._loaded_version or now - self._loaded_at > _cache_seconds():
            value = self._load()
            self._value, self._loaded_at, self._loaded_version = value, now, version
            return value
        return self._value

    def clear(self) -> None:
        self._value = None
