"""Business-rule errors of the triggers domain (rendered by the API as JSON).

Errors raised after a firing was recorded carry its id in ``extra["invocation_id"]``.
"""
from __future__ import annotations

from typing import Any

from promptpilot.common.errors import ApplicationError, Conflict, NotFound, ValidationFailed
from workflows.errors import InputValidationFailed


class TriggerNotFound(NotFound):
    code = "trigger_not_found"


class TriggerInactive(Conflict):
    code = "trigger_inactive"


class TriggerConfigInvalid(ValidationFailed):
    code = "invalid_trigger_config"


class TriggerTypeNotAvailable(ValidationFailed):
    code = "trigger_type_not_available"


class TriggerNotExecutable(ValidationFailed):
    code = "trigger_not_executable"


class SecretNotRotatable(ValidationFailed):
    code = "secret_not_rotatable"


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the configured keys (PROMPTPILOT_SECRETS_KEY changed)."""


class _WithInvocation:
    def __init__(self, message: str, extra: dict[str, Any] | None = None, *, invocation=None) -> None:
        extra = dict(extra or {})
        if invocation is not None:
            extra.setdefault("invocation_id", str(invocation.pk))
        super().__init__(message, extra)  # type: ignore[call-arg]
        self.invocation = invocation


class TriggerInputInvalid(_WithInvocation, InputValidationFailed):
    """The firing was recorded INVALID_INPUT; ``extra["errors"]`` names every offending variable."""

    status_code = 400


class WebhookInputInvalid(TriggerInputInvalid):
    """Same as TriggerInputInvalid, for a webhook: 422 (the body parsed and verified, its content did not fit)."""

    status_code = 422


class TriggerRejected(_WithInvocation, Conflict):
    """The firing was recorded REJECTED because the workflow cannot run (e.g. it is inactive)."""

    code = "trigger_rejected"


class WebhookSignatureInvalid(_WithInvocation, ApplicationError):
    status_code = 401
    code = "invalid_signature"


class WebhookBodyInvalid(_WithInvocation, ValidationFailed):
    code = "invalid_body"


class WebhookBodyTooLarge(_WithInvocation, ApplicationError):
    status_code = 413
    code = "request_too_large"


class ApiKeyInvalid(ApplicationError):
    status_code = 401
    code = "invalid_api_key"
