"""Gemini through the ``google-genai`` SDK (``client.models.generate_content``, ``GEMINI_API_KEY``).

google-genai differs from the two other SDKs in ways that matter here: it has no
timeout unless told, and takes it in milliseconds; it retries nothing unless given
retry options (so none are given); it reports errors as ``errors.APIError`` with the
HTTP status in ``code``; and Google sends the wait for a 429 in the body
(``google.rpc.RetryInfo``) more often than in a ``Retry-After`` header.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..clients import connection_limits
from ..credentials import GEMINI, Credentials, credentials_for
from ..errors import BadRequest, InvalidCredentials, ProviderError
from ..registry import register
from ..types import DEFAULT_TIMEOUT_SECONDS, ModelRequest, ModelResponse, TokenUsage
from .base import (
    SDKAdapter,
    connection_error,
    error_for_status,
    malformed_response,
    parse_retry_after,
    provider_message,
    request_id_from,
    timeout_error,
)

API_VERSION = "v1beta"  # pinned, so an SDK upgrade or GOOGLE_GENAI_API_VERSION cannot move it
TRUNCATED = "MAX_TOKENS"
CLEAN_FINISH = frozenset({"STOP", TRUNCATED, "FINISH_REASON_UNSPECIFIED"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def timeout_ms(seconds: float) -> int:
    # HttpOptions.timeout is in milliseconds, and 0 would mean "no timeout" to the SDK.
    return max(1, round(seconds * 1000))


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, other transport errors) of whichever httpx flavour the SDK runs on."""
    timeouts: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)


def _error_details(body: Any) -> list[dict[str, Any]]:
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [item for item in details or [] if isinstance(item, dict)]


def _retry_delay(body: Any) -> float | None:
    """``google.rpc.RetryInfo.retryDelay`` ("27s") from an error body."""
    for item in _error_details(body):
        if str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _is_invalid_key(body: Any) -> bool:
    # Gemini answers a wrong key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
    return any(item.get("reason") == "API_KEY_INVALID" for item in _error_details(body))


class GeminiAdapter(SDKAdapter):
    name = "gemini"
    spec = GEMINI

    def credentials(self) -> Credentials:
        return credentials_for(self.spec)

    def make_client(self, credentials: Credentials) -> Any:
        from google import genai
        from google.genai import types

        return genai.Client(
            api_key=credentials.api_key,
            vertexai=False,  # the Gemini Developer API, whatever GOOGLE_GENAI_USE_VERTEXAI says
            http_options=types.HttpOptions(
                base_url=credentials.base_url,
                api_version=API_VERSION,
                timeout=timeout_ms(DEFAULT_TIMEOUT_SECONDS),  # each call passes the step's own timeout
                retry_options=None,  # no SDK retries: the project's retry policy decides
                client_args={"limits": connection_limits()},
                async_client_args={"limits": connection_limits()},
            ),
        )

    def async_client_for(self, credentials: Credentials) -> Any:
        # The same client: ``client.aio`` keeps one connection pool per event loop itself.
        return self.client_for(credentials)

    def send(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        response = client.models.generate_content(
            model=request.model, contents=request.prompt, config=self._config(request, params)
        )
        return self._from_sdk(response)

    async def asend(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        response = await client.aio.models.generate_content(
            model=request.model, contents=request.prompt, config=self._config(request, params)
        )
        return self._from_sdk(response)

    def _config(self, request: ModelRequest, params: dict[str, Any]) -> Any:
        from google.genai import types

        structured: dict[str, Any] = {}
        if request.output_schema is not None:
            # response_json_schema takes JSON Schema as it is (response_schema wants
            # Google's OpenAPI subset); it needs the JSON mime type alongside.
            structured = {"response_mime_type": "application/json", "response_json_schema": request.output_schema}
        return types.GenerateContentConfig(
            **structured,
            system_instruction=request.system or None,
            temperature=params.get("temperature"),
            top_p=params.get("top_p"),
            max_output_tokens=params.get("max_tokens"),
            stop_sequences=params.get("stop"),
            http_options=types.HttpOptions(timeout=timeout_ms(request.timeout_seconds)),
            # No tools are given; this only stops the SDK logging "AFC is enabled" on every call.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    def _from_sdk(self, response: Any) -> ModelResponse:
        headers = getattr(response.sdk_http_response, "headers", None) or {}
        # Google sends no request-id header as a rule; the body's responseId identifies the call.
        request_id = request_id_from(headers) or getattr(response, "response_id", None)
        return self._response(response, request_id)

    def _response(self, response: Any, request_id: str | None) -> ModelResponse:
        candidates = response.candidates or []
        feedback = response.prompt_feedback
        if not candidates and feedback is not None and feedback.block_reason:
            reason = getattr(feedback.block_reason, "value", feedback.block_reason)
            raise BadRequest(
                f"{self.spec.label} blocked the prompt ({reason}). {feedback.block_reason_message or ''}".strip(),
                status_code=200,
                details={"provider": self.name, "status_code": 200, "request_id": request_id, "block_reason": reason},
            )
        if not candidates:
            raise malformed_response(
                self.spec, status=200, request_id=request_id, body=None, reason="no candidates in the answer"
            )
        warnings: list[str] = []
        candidate = candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        # Thinking models return their thoughts as parts flagged ``thought``: not the answer.
        text = "".join(part.text for part in parts if part.text and not part.thought)
        finish_reason = None
        if candidate.finish_reason is not None:
            finish_reason = getattr(candidate.finish_reason, "value", str(candidate.finish_reason))
        if finish_reason == TRUNCATED:
            warnings.append(f"{self.spec.label} stopped at max_tokens: the answer is cut short.")
        elif finish_reason and finish_reason not in CLEAN_FINISH:
            warnings.append(f"{self.spec.label} stopped early: finish reason {finish_reason}.")
        usage = response.usage_metadata
        if usage is None:
            warnings.append(f"{self.spec.label} reported no token usage.")
        # Thinking tokens are billed as output; with them, input + output matches the total.
        output_tokens = (getattr(usage, "candidates_token_count", 0) or 0) + (
            getattr(usage, "thoughts_token_count", 0) or 0
        )
        return ModelResponse(
            content=text,
            tokens=TokenUsage.of(
                getattr(usage, "prompt_token_count", 0), output_tokens, getattr(usage, "total_token_count", None)
            ).as_dict(),
            latency_ms=0,
            finish_reason=finish_reason,
            request_id=request_id,
            warnings=warnings,
        )

    def translate(self, exc: BaseException, credentials: Credentials, request: ModelRequest) -> ProviderError | None:
        from google.genai import errors

        timeouts, transport = _transport_errors()
        if isinstance(exc, errors.APIError):
            return self._api_error(exc)
        if isinstance(exc, timeouts):
            return timeout_error(self.spec, request.timeout_seconds)
        if isinstance(exc, transport):
            return connection_error(self.spec, credentials.base_url, exc)
        if isinstance(exc, json.JSONDecodeError):
            # The SDK has already dropped the response; only the parser's complaint is left.
            return malformed_response(
                self.spec, status=200, request_id=None, body=exc.doc, reason=f"not valid JSON: {exc}"
            )
        return None

    def _api_error(self, exc: Any) -> ProviderError:
        status = int(exc.code or 0)
        headers = getattr(exc.response, "headers", None)
        message = provider_message(exc.details, exc.message or str(exc))
        error = error_for_status(
            self.spec,
            status,
            message,
            headers=headers,
            code=exc.status,
            retry_after=parse_retry_after(headers) if headers else None,
        )
        if error.retryable and error.retry_after is None:
            error.retry_after = _retry_delay(exc.details)
        if status == 400 and _is_invalid_key(exc.details):
            error = InvalidCredentials(
                f"{self.spec.label} rejected the API key in {self.spec.key_variable} (HTTP 400: {message}). "
                f"Check or replace the key; see {self.spec.docs}.",
                status_code=status,
                details={**error.details, "variable": self.spec.key_variable, "docs": self.spec.docs},
            )
        return error


register(GeminiAdapter())
