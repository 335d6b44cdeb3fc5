"""Provider error taxonomy. Callers decide what to do from ``retryable`` alone."""
from __future__ import annotations

from typing import Any


class ProviderError(Exception):
    type = "ProviderError"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.details = details or {}


class UnknownProvider(ProviderError):
    type = "UnknownProvider"


class MissingCredentials(ProviderError):
    type = "MissingCredentials"


class InvalidCredentials(ProviderError):
    type = "InvalidCredentials"


class BadRequest(ProviderError):
    type = "BadRequest"


class RateLimited(ProviderError):
    type = "RateLimited"
    retryable = True


class QuotaExceeded(ProviderError):
    """The account is out of credit or quota (e.g. OpenAI's 429 ``insufficient_quota``).

    Sent with a 429 like a rate limit, but waiting does not help: not retried.
    """

    type = "QuotaExceeded"


class ProviderUnavailable(ProviderError):
    """5XX, overloaded (Anthropic 529), 409 conflict, connection refused or reset, or an
    answer that is not valid JSON (a truncated body or a proxy's error page)."""

    type = "ProviderUnavailable"
    retryable = True


class ProviderTimeout(ProviderError):
    """No answer within the step's timeout, or the provider's own 408."""

    type = "ProviderTimeout"
    retryable = True
