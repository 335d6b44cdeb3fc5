"""What every SDK adapter shares: parameter checks, timing, usage normalisation, request
ids, ``Retry-After`` parsing, and the mapping of HTTP failures onto ``providers.errors``.

An adapter subclasses :class:`SDKAdapter` and fills in four hooks (credentials, client
factory, send, translate). SDKs are imported inside those hooks, not at module level,
so loading the registry stays cheap for processes that only ever use ``echo``.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from ..clients import get_async_client, get_client
from ..credentials import Credentials, ProviderSpec
from ..errors import (
    BadRequest,
    InvalidCredentials,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from ..types import ModelRequest, ModelResponse

logger = logging.getLogger("providers")

COMMON_PARAMS = ("temperature", "max_tokens", "top_p", "stop")
MESSAGE_LIMIT = 500  # provider messages are quoted up to this many characters
EXCERPT_LIMIT = 200  # of a body that is not valid JSON


# --- parameters ---------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_params(spec: ProviderSpec, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The common parameters that are set, checked for type, and warnings for the rest.

    Ranges differ per provider (temperature is 0..2 for OpenAI, 0..1 for Anthropic), so
    only types are checked here; the provider rejects an out-of-range value with its
    own message (a ``BadRequest``). Unknown parameters are ignored with a warning.
    """
    known: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in params.items():
        if key not in COMMON_PARAMS:
            warnings.append(
                f'{spec.label} ignores the parameter "{key}"; supported: {", ".join(COMMON_PARAMS)}.'
            )
            continue
        if value is None:
            continue
        if key in ("temperature", "top_p") and not (_is_number(value) and value >= 0):
            raise BadRequest(f'{spec.label}: "{key}" must be a number, 0 or more; got {value!r}.')
        if key == "max_tokens" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise BadRequest(f'{spec.label}: "max_tokens" must be a whole number above 0; got {value!r}.')
        if key == "stop":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
                raise BadRequest(f'{spec.label}: "stop" must be a string or a list of strings; got {value!r}.')
        known[key] = value
    return known, warnings


# --- responses ----------------------------------------------------------------------------


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, dict):  # a plain dict is case-sensitive
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def request_id_from(headers: Mapping[str, str] | None) -> str | None:
    """The provider's request id (OpenAI ``x-request-id``, Anthropic ``request-id``)."""
    return _header(headers, "x-request-id") or _header(headers, "request-id") or None


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (milliseconds) or ``Retry-After`` (seconds
    or an HTTP date); ``None`` when absent or unreadable."""
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    text = _header(headers, "retry-after")
    if text is None:
        return None
    try:
        value = float(text)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def provider_message(body: Any, fallback: str) -> str:
    """The provider's own error message from a parsed error body, else ``fallback``."""
    message = None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            message = inner.get("message")
        elif isinstance(inner, str):
            message = inner
        message = message or body.get("message")
    elif isinstance(body, str) and body.strip():
        message = body
    text = str(message or fallback).strip()
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


# --- errors -------------------------------------------------------------------------------


def _details(spec: ProviderSpec, status: int | None, request_id: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"provider": spec.name, "status_code": status, "request_id": request_id}
    details.update({key: value for key, value in extra.items() if value is not None})
    return details


def error_for_status(
    spec: ProviderSpec,
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    request_id: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The taxonomy error for an HTTP error status (the table in docs/PROVIDERS.md)."""
    request_id = request_id or request_id_from(headers)
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    details = _details(spec, status, request_id, provider_code=code)
    label = spec.label
    if status in (401, 403):
        details.update(variable=spec.key_variable, docs=spec.docs)
        return InvalidCredentials(
            f"{label} rejected the API key in {spec.key_variable} (HTTP {status}: {message}). "
            f"Check or replace the key; see {spec.docs}.",
            status_code=status,
            details=details,
        )
    if status == 429 and code == "insufficient_quota":
        return QuotaExceeded(
            f"{label} says the account is out of quota or credit (HTTP 429: {message}). "
            "Retrying will not help; check the account's billing.",
            status_code=status,
            details=details,
        )
    if status == 429:
        return RateLimited(
            f"{label} rate limit reached (HTTP 429): {message}",
            status_code=status,
            retry_after=retry_after,
            details=details,
        )
    if status == 408:
        return ProviderTimeout(
            f"{label} timed out the request (HTTP 408): {message}",
            status_code=status,
            retry_after=retry_after,
            details=details,
        )
    if status == 409 or status >= 500:
        return ProviderUnavailable(
            f"{label} is unavailable (HTTP {status}): {message}",
            status_code=status,
            retry_after=retry_after,
            details=details,
        )
    if 400 <= status < 500:
        return BadRequest(
            f"{label} rejected the request (HTTP {status}): {message}",
            status_code=status,
            details=details,
        )
    return ProviderUnavailable(
        f"{label} answered with an unexpected HTTP {status}: {message}",
        status_code=status,
        retry_after=retry_after,
        details=details,
    )


def timeout_error(spec: ProviderSpec, timeout_seconds: float) -> ProviderTimeout:
    return ProviderTimeout(
        f"{spec.label} did not answer within {timeout_seconds:g} s (the step's timeout).",
        details=_details(spec, None, None, timeout_seconds=timeout_seconds),
    )


def connection_error(spec: ProviderSpec, base_url: str, exc: BaseException) -> ProviderUnavailable:
    reason = str(exc.__cause__ or exc) or type(exc).__name__
    return ProviderUnavailable(
        f"Could not reach {spec.label} at {base_url}: {reason}",
        details=_details(spec, None, None, base_url=base_url),
    )


def malformed_response(
    spec: ProviderSpec, *, status: int | None, request_id: str | None, body: str | bytes | None, reason: str
) -> ProviderUnavailable:
    """An answer that is not the JSON the SDK expects, or JSON without an answer in it.
    Retryable: in practice it is a truncated body or a proxy's HTML error page, which
    the next attempt usually clears."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    excerpt = (body or "")[:EXCERPT_LIMIT]
    return ProviderUnavailable(
        f"{spec.label} sent an answer that is not a valid response ({reason}); it may be truncated or "
        "come from a proxy in between.",
        status_code=status,
        details=_details(spec, status, request_id, body_excerpt=excerpt),
    )


def translate_stainless_error(
    spec: ProviderSpec, sdk: Any, exc: BaseException, *, base_url: str, timeout_seconds: float
) -> ProviderError | None:
    """Errors of the ``openai`` and ``anthropic`` SDKs, which share one exception family."""
    if isinstance(exc, sdk.APITimeoutError):
        return timeout_error(spec, timeout_seconds)
    if isinstance(exc, sdk.APIResponseValidationError):
        response = exc.response
        return malformed_response(
            spec, status=exc.status_code, request_id=request_id_from(response.headers),
            body=response.text, reason=str(exc),
        )
    if isinstance(exc, sdk.APIStatusError):
        body = exc.body
        code = body.get("code") if isinstance(body, dict) else None
        return error_for_status(
            spec,
            exc.status_code,
            provider_message(body, exc.message),
            headers=exc.response.headers,
            code=code if isinstance(code, str) else None,
        )
    if isinstance(exc, sdk.APIConnectionError):
        return connection_error(spec, base_url, exc)
    return None


# --- the adapter skeleton -----------------------------------------------------------------


class SDKAdapter:
    """One ``complete`` (and one ``acomplete``) for every SDK adapter: check, get the
    pooled client, call, translate.

    Subclasses set ``name`` and ``spec`` and implement the hooks below: ``credentials``,
    ``make_client``, ``send`` and ``translate`` for the sync path; ``make_async_client``
    and ``asend`` for the async one, which multi-model steps use so that concurrent calls
    share one event loop and a cancelled call aborts its HTTP request.
    """

    name: str
    spec: ProviderSpec

    def credentials(self) -> Credentials:
        raise NotImplementedError

    def make_client(self, credentials: Credentials) -> Any:
        """A new SDK client: SDK retries off, a default timeout set."""
        raise NotImplementedError

    def make_async_client(self, credentials: Credentials) -> Any:
        """A new async SDK client, configured like ``make_client``'s."""
        raise NotImplementedError

    def send(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        """One HTTP call; ``latency_ms`` is filled in by ``complete``."""
        raise NotImplementedError

    async def asend(self, client: Any, request: ModelRequest, params: dict[str, Any]) -> ModelResponse:
        """``send`` on the async client."""
        raise NotImplementedError

    def translate(self, exc: BaseException, credentials: Credentials, request: ModelRequest) -> ProviderError | None:
        """The taxonomy error for an SDK exception, or None for a bug (re-raised as is)."""
        raise NotImplementedError

    def client_for(self, credentials: Credentials) -> Any:
        return get_client(self.name, credentials.base_url, credentials.api_key, lambda: self.make_client(credentials))

    def async_client_for(self, credentials: Credentials) -> Any:
        return get_async_client(
            self.name, credentials.base_url, credentials.api_key, lambda: self.make_async_client(credentials)
        )

    def complete(self, request: ModelRequest) -> ModelResponse:
        credentials = self.credentials()  # MissingCredentials before any HTTP call
        params, warnings = check_params(self.spec, request.params)
        client = self.client_for(credentials)
        started = time.monotonic()
        try:
            response = self.send(client, request, params)
        except Exception as exc:
            error = self._failure(exc, credentials, request, started)
            if error is exc or error is None:
                raise
            raise error from exc
        return self._completed(response, warnings, request, started)

    async def acomplete(self, request: ModelRequest) -> ModelResponse:
        """``complete`` on the running event loop. Cancelling the task aborts the HTTP
        request (the SDK closes its connection): race mode relies on that."""
        credentials = self.credentials()
        params, warnings = check_params(self.spec, request.params)
        client = self.async_client_for(credentials)
        started = time.monotonic()
        try:
            response = await self.asend(client, request, params)
        except Exception as exc:  # not CancelledError: a cancelled call is not a failure
            error = self._failure(exc, credentials, request, started)
            if error is exc or error is None:
                raise
            raise error from exc
        return self._completed(response, warnings, request, started)

    def _failure(
        self, exc: Exception, credentials: Credentials, request: ModelRequest, started: float
    ) -> ProviderError | None:
        """The taxonomy error to raise for ``exc`` (``exc`` itself when it already is
        one), logged; None for a bug, which is re-raised as it is."""
        error = exc if isinstance(exc, ProviderError) else self.translate(exc, credentials, request)
        if error is not None:
            self._log_failure(request, error, started)
        return error

    def _completed(
        self, response: ModelResponse, warnings: list[str], request: ModelRequest, started: float
    ) -> ModelResponse:
        response.latency_ms = elapsed_ms(started)
        response.warnings = warnings + response.warnings
        logger.info(
            "provider.completed",
            extra={
                "provider": self.name,
                "model": request.model,
                "latency_ms": response.latency_ms,
                "provider_request_id": response.request_id,  # request_id is the HTTP request's (logs.py)
                "tokens": response.tokens,
            },
        )
        return response

    def _log_failure(self, request: ModelRequest, error: ProviderError, started: float) -> None:
        logger.warning(
            "provider.failed",
            extra={
                "provider": self.name,
                "model": request.model,
                "latency_ms": elapsed_ms(started),
                "error_type": error.type,
                "status_code": error.status_code,
                "provider_request_id": error.details.get("request_id"),
            },
        )
