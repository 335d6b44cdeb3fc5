"""Each provider's wire format, described once, so one test body can check the same
behaviour against all three real SDKs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.registry import get_adapter
from providers.types import ModelRequest, ModelResponse

from .fakes import (
    FakeServer,
    anthropic_error,
    anthropic_message,
    gemini_error,
    gemini_response,
    openai_completion,
    openai_error,
)

GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True)
class Wire:
    """How one provider looks on the wire, for tests shared by all providers."""

    provider: str
    model: str
    key_variable: str
    base_url_variable: str
    url_suffix: str  # appended to the server's URL to make the provider's base URL
    path: str
    key_header: str
    request_id_header: str
    success: Callable[..., dict[str, Any]]
    error: Callable[[int, str], dict[str, Any]]
    usage: tuple[int, int, int]  # what ``success()`` reports: input, output, total

    def settings(self, server: FakeServer, api_key: str = "test-key") -> dict[str, str]:
        return {self.key_variable: api_key, self.base_url_variable: server.url + self.url_suffix}


WIRES = [
    Wire(
        provider="openai",
        model="gpt-x",
        key_variable="OPENAI_API_KEY",
        base_url_variable="OPENAI_BASE_URL",
        url_suffix="/v1",
        path="/v1/chat/completions",
        key_header="authorization",
        request_id_header="x-request-id",
        success=openai_completion,
        error=lambda status, message: openai_error(message),
        usage=(11, 4, 15),
    ),
    Wire(
        provider="anthropic",
        model="claude-x",
        key_variable="ANTHROPIC_API_KEY",
        base_url_variable="ANTHROPIC_BASE_URL",
        url_suffix="",
        path="/v1/messages",
        key_header="authorization",  # this SDK version sends the key as a Bearer token
        request_id_header="request-id",
        success=anthropic_message,
        error=lambda status, message: anthropic_error(message),
        usage=(12, 5, 17),
    ),
    Wire(
        provider="gemini",
        model="gemini-x",
        key_variable="GEMINI_API_KEY",
        base_url_variable="GEMINI_BASE_URL",
        url_suffix="",
        path="/v1beta/models/gemini-x:generateContent",
        key_header="x-goog-api-key",
        request_id_header="x-request-id",
        success=gemini_response,
        error=lambda status, message: gemini_error(status, message, GEMINI_STATUS.get(status, "UNKNOWN")),
        usage=(13, 6, 19),
    ),
]


def call(wire: Wire, prompt: str = "Say hi", **fields: Any) -> ModelResponse:
    """One ``complete`` through the registry, as the PROMPT step makes it."""
    fields.setdefault("timeout_seconds", 5.0)
    request = ModelRequest(provider=wire.provider, model=wire.model, prompt=prompt, **fields)
    return get_adapter(wire.provider).complete(request)
