"""The provider contract: one request shape in, one normalised response out."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_TIMEOUT_SECONDS = 120.0


def _count(value: Any) -> int:
    """A token count as reported or stored; None, "" and anything that is not a number are 0."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class TokenUsage:
    """Tokens spent by one model call, or by several added up.

    Stored and answered as ``{"input": int, "output": int, "total": int}`` (``as_dict``);
    ``from_raw`` reads that shape back, whatever a provider or an old row put in it.
    """

    input: int = 0
    output: int = 0
    total: int = 0

    @classmethod
    def of(cls, input: Any, output: Any, total: Any = None) -> TokenUsage:
        """From the counts a provider reports; ``total`` defaults to input + output."""
        used_in, used_out = _count(input), _count(output)
        return cls(used_in, used_out, _count(total) or used_in + used_out)

    @classmethod
    def from_raw(cls, raw: Any) -> TokenUsage:
        """From ``{input, output, total}`` (missing keys, None or strings allowed; other
        keys such as ``cost_usd`` ignored); anything that is not a mapping is no tokens."""
        if isinstance(raw, TokenUsage):
            return raw
        if not isinstance(raw, Mapping):
            return cls()
        return cls.of(raw.get("input"), raw.get("output"), raw.get("total"))

    @classmethod
    def total_of(cls, raws: Iterable[Any]) -> TokenUsage:
        """The sum of several ``from_raw`` values."""
        used = cls()
        for raw in raws:
            used += cls.from_raw(raw)
        return used

    def __add__(self, other: TokenUsage) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(self.input + other.input, self.output + other.output, self.total + other.total)

    @property
    def spent(self) -> bool:
        """Whether any token was counted (a call that failed before the provider counted spent none)."""
        return bool(self.input or self.output or self.total)

    def as_dict(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output, "total": self.total}


@dataclass(frozen=True)
class ModelRequest:
    provider: str
    model: str
    prompt: str
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, top_p, stop, ...
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # A JSON Schema the answer must match; adapters whose API has a structured-output
    # mode ask for it (docs/WORKFLOW_ENGINE.md "Structured output"). The step validates
    # every answer itself either way.
    output_schema: dict[str, Any] | None = None


@dataclass
class ModelResponse:
    content: str
    tokens: dict[str, int]  # TokenUsage.as_dict(): {"input", "output", "total"} as reported by the provider
    latency_ms: int
    finish_reason: str | None = None
    request_id: str | None = None
    retries: int = 0
    warnings: list[str] = field(default_factory=list)


class ProviderAdapter(Protocol):
    """One module per vendor implements this; the registry picks it by ``name``."""

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...
