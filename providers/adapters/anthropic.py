"""Anthropic Messages API through the official ``anthropic`` SDK (``ANTHROPIC_API_KEY``)."""
from __future__ import annotations

import json
from typing import Any

from ..clients import connection_limits
from ..credentials import ANTHROPIC, Credentials, credentials_for
from ..errors import ProviderError
from ..registry import register
from ..types import DEFAULT_TIMEOUT_SECONDS, ModelRequest, ModelResponse, TokenUsage
from .base import SDKAdapter, malformed_response, request_id_from, translate_stainless_error

# Anthropic requires max_tokens on every request; this is used when the step sets none.
DEFAULT_MAX_TOKENS = 1024
TRUNCATED = "max_tokens"
REMOVED_PARAMS = ("temperature", "top_p")


class AnthropicAdapter(SDKAdapter):
    name = "anthropic"
    spec = ANTHROPIC

    def credentials(self) -> Credentials:
        return credentials_for(self.spec)

    def make_client(self, credentials: Credentials) -> Any:
        import anthropic

        # Passing api_key and base_url explicitly also stops the SDK from looking for
        # credentials of its own (environment, profiles on disk).
        return anthropic.Anthropic(
            api_key=credentials.api_key,
            base_url=credentials.base_url,
            http_client=anthropic.DefaultHttpxClient(limits=connection_limits()),
            max_retries=0,  # the project's retry policy decides, and counts
            timeout=DEFAULT_TIMEOUT_SECONDS,  # each call passes the step's own timeout
        )

    def make_async_client(self, credentials: Credentials) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=credentials.api_key,
            base_url=credentials.base_url,
            http_client=anthropic.DefaultAsyncHttpxClient(limits=connection_limits()),
            max_retries=0,
            timeout=DEFAULT_TIMEOUT_SECONDS,
        )

    def send(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        args, dropped = self._create_args(request, params)
        raw = client.messages.with_raw_response.create(**args)
        request_id = request_id_from(raw.headers)
        try:
            message = raw.parse()
        except json.JSONDecodeError as exc:
            raise self._not_json(raw, request_id, exc) from exc
        return self._checked(raw, message, request_id, dropped)

    async def asend(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        args, dropped = self._create_args(request, params)
        raw = await client.messages.with_raw_response.create(**args)
        request_id = request_id_from(raw.headers)
        try:
            message = await raw.parse()  # the async raw response reads its body here
        except json.JSONDecodeError as exc:
            raise self._not_json(raw, request_id, exc) from exc
        return self._checked(raw, message, request_id, dropped)

    def _create_args(self, request: ModelRequest, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        options: dict[str, Any] = {"max_tokens": params.get("max_tokens", DEFAULT_MAX_TOKENS)}
        if request.system:
            options["system"] = request.system
        # NOTE: API version 2026-10-21 (what anthropic SDK 2.x sends) answers 400 to any
        # temperature/top_p/top_k, even at their defaults. Dropping them with a warning
        # keeps a step that shares its parameters across providers working on Claude.
        dropped = [
            f'{self.spec.label} ignores "{key}": its current API version no longer accepts sampling parameters.'
            for key in REMOVED_PARAMS
            if key in params
        ]
        if "stop" in params:
            options["stop_sequences"] = params["stop"]
        if request.output_schema is not None:
            # Structured outputs (output_config.format): the answer is one text block of JSON.
            options["output_config"] = {"format": {"type": "json_schema", "schema": request.output_schema}}
        # An explicit timeout also skips the SDK's refusal of long non-streaming calls.
        args = {
            "model": request.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "timeout": request.timeout_seconds,
            **options,
        }
        return args, dropped

    def _not_json(self, raw: Any, request_id: str | None, exc: json.JSONDecodeError) -> ProviderError:
        return malformed_response(
            self.spec, status=raw.status_code, request_id=request_id, body=raw.http_response.text,
            reason=f"not valid JSON: {exc}",
        )

    def _checked(self, raw: Any, message: Any, request_id: str | None, dropped: list[str]) -> ModelResponse:
        from anthropic.types import Message

        if not isinstance(message, Message) or getattr(message, "content", None) is None:
            raise malformed_response(
                self.spec, status=raw.status_code, request_id=request_id, body=raw.http_response.text,
                reason="not valid JSON, or no content in it",
            )
        return self._response(message, request_id, warnings=dropped)

    def _response(self, message: Any, request_id: str | None, *, warnings: list[str]) -> ModelResponse:
        text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
        if message.stop_reason == TRUNCATED:
            warnings.append(f"{self.spec.label} stopped at max_tokens: the answer is cut short.")
        elif message.stop_reason == "refusal":
            warnings.append(f"{self.spec.label} refused to answer.")
        usage = message.usage
        if usage is None:
            warnings.append(f"{self.spec.label} reported no token usage.")
        # Cached prompt tokens are reported apart from input_tokens; all of them were read.
        input_tokens = (
            (getattr(usage, "input_tokens", 0) or 0)
            + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
            + (getattr(usage, "cache_read_input_tokens", 0) or 0)
        )
        return ModelResponse(
            content=text,
            tokens=TokenUsage.of(input_tokens, getattr(usage, "output_tokens", 0)).as_dict(),
            latency_ms=0,
            finish_reason=message.stop_reason,
            request_id=request_id,
            warnings=warnings,
        )

    def translate(self, exc: BaseException, credentials: Credentials, request: ModelRequest) -> ProviderError | None:
        import anthropic

        return translate_stainless_error(
            self.spec, anthropic, exc, base_url=credentials.base_url, timeout_seconds=request.timeout_seconds
        )


register(AnthropicAdapter())
