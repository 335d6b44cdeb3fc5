"""The provider contract: one request shape in, one normalised response out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class ModelRequest:
    provider: str
    model: str
    prompt: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, top_p, stop, ...
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


@dataclass
class ModelResponse:
    content: str
    tokens: dict[str, int]  # {"input", "output", "total"} as reported by the provider
    latency_ms: int
    finish_reason: str | None = None
    request_id: str | None = None
    retries: int = 0
    warnings: list[str] = field(default_factory=list)


class ProviderAdapter(Protocol):
    """One module per vendor implements this; the registry picks it by ``name``."""

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...
