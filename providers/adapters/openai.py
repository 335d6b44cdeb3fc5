"""OpenAI chat completions through the official ``openai`` SDK, and the same wire format
for any OpenAI-compatible server (Ollama, vLLM, LM Studio, OpenRouter...).

``openai`` reads ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``; an
:class:`OpenAICompatibleAdapter` is built with its own base URL and key (the admin-defined
connections bind to it).
"""
from __future__ import annotations

import json
from typing import Any

from ..clients import connection_limits
from ..credentials import OPENAI, Credentials, ProviderSpec, credentials_for
from ..errors import ProviderError
from ..registry import register
from ..types import DEFAULT_TIMEOUT_SECONDS, ModelRequest, ModelResponse, TokenUsage
from .base import SDKAdapter, malformed_response, request_id_from, translate_stainless_error

TRUNCATED = "length"
SCHEMA_NAME = "output"  # response_format needs a name; one schema per request, so any will do


class OpenAIAdapter(SDKAdapter):
    name = "openai"
    spec = OPENAI
    # OpenAI deprecated ``max_tokens`` for chat completions and its reasoning models
    # reject it; compatible servers mostly know only ``max_tokens``.
    max_tokens_field = "max_completion_tokens"

    def credentials(self) -> Credentials:
        return credentials_for(self.spec)

    def make_client(self, credentials: Credentials) -> Any:
        import openai

        return openai.OpenAI(
            api_key=credentials.api_key,
            base_url=credentials.base_url,
            http_client=openai.DefaultHttpxClient(limits=connection_limits()),
            max_retries=0,  # the project's retry policy decides, and counts
            timeout=DEFAULT_TIMEOUT_SECONDS,  # each call passes the step's own timeout
        )

    def make_async_client(self, credentials: Credentials) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=credentials.api_key,
            base_url=credentials.base_url,
            http_client=openai.DefaultAsyncHttpxClient(limits=connection_limits()),
            max_retries=0,
            timeout=DEFAULT_TIMEOUT_SECONDS,
        )

    def send(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        raw = client.chat.completions.with_raw_response.create(**self._create_args(request, params))
        return self._parse(raw)

    async def asend(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        raw = await client.chat.completions.with_raw_response.create(**self._create_args(request, params))
        return self._parse(raw)

    def _create_args(self, request: ModelRequest, params: dict[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        options: dict[str, Any] = {}
        for key in ("temperature", "top_p", "stop"):
            if key in params:
                options[key] = params[key]
        if "max_tokens" in params:
            options[self.max_tokens_field] = params["max_tokens"]
        if request.output_schema is not None:
            # Structured Outputs. Not "strict": strict mode accepts only a subset of JSON
            # Schema (every property required, no additionalProperties); the step checks
            # each answer against the full schema anyway.
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": request.output_schema},
            }
        return {"model": request.model, "messages": messages, "timeout": request.timeout_seconds, **options}

    def _parse(self, raw: Any) -> ModelResponse:
        # The raw response of both clients has read its body already; parse() is sync.
        from openai.types.chat import ChatCompletion

        request_id = request_id_from(raw.headers)
        try:
            completion = raw.parse()
        except json.JSONDecodeError as exc:
            raise malformed_response(
                self.spec, status=raw.status_code, request_id=request_id, body=raw.http_response.text,
                reason=f"not valid JSON: {exc}",
            ) from exc
        if not isinstance(completion, ChatCompletion) or not getattr(completion, "choices", None):
            # A non-JSON content type parses to a str; JSON without choices is not an answer either.
            raise malformed_response(
                self.spec, status=raw.status_code, request_id=request_id, body=raw.http_response.text,
                reason="not valid JSON, or no choices in it",
            )
        return self._response(completion, request_id)

    def _response(self, completion: Any, request_id: str | None) -> ModelResponse:
        choice = completion.choices[0]
        message = choice.message
        warnings: list[str] = []
        if getattr(message, "refusal", None):
            warnings.append(f"{self.spec.label} refused: {message.refusal}")
        if choice.finish_reason == TRUNCATED:
            warnings.append(f"{self.spec.label} stopped at max_tokens: the answer is cut short.")
        usage = completion.usage
        if usage is None:
            warnings.append(f"{self.spec.label} reported no token usage.")
        return ModelResponse(
            content=message.content or "",
            tokens=TokenUsage.of(
                getattr(usage, "prompt_tokens", 0),
                getattr(usage, "completion_tokens", 0),
                getattr(usage, "total_tokens", None),
            ).as_dict(),
            latency_ms=0,
            finish_reason=choice.finish_reason,
            request_id=request_id,
            warnings=warnings,
        )

    def translate(self, exc: BaseException, credentials: Credentials, request: ModelRequest) -> ProviderError | None:
        import openai

        return translate_stainless_error(
            self.spec, openai, exc, base_url=credentials.base_url, timeout_seconds=request.timeout_seconds
        )


class OpenAICompatibleAdapter(OpenAIAdapter):
    """The OpenAI wire format against any base URL, with its own key.

    ``OpenAICompatibleAdapter("local-llama", "http://127.0.0.1:11434/v1", None)`` talks to
    Ollama. A server that needs no key gets a placeholder (the SDK always sends one); a
    server that rejects it answers 401, reported as ``InvalidCredentials`` naming the
    connection.
    """

    max_tokens_field = "max_tokens"
    NO_KEY = "not-needed"

    def __init__(self, name: str, base_url: str, api_key: str | None = None) -> None:
        if not base_url or not base_url.strip():
            raise ValueError(f'OpenAI-compatible connection "{name}" needs a base URL, e.g. http://127.0.0.1:11434/v1.')
        self.name = name
        self._credentials = Credentials(api_key=(api_key or "").strip() or self.NO_KEY, base_url=base_url.strip())
        self.spec = ProviderSpec(
            name=name,
            label=f'Connection "{name}"',
            key_variable=f'the API key of connection "{name}"',
            base_url_variable=None,
            default_base_url=self._credentials.base_url,
            docs_anchor="openai-compatible",
        )

    def credentials(self) -> Credentials:
        return self._credentials


register(OpenAIAdapter())
