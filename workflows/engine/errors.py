"""The engine's error vocabulary.

Every failure a step can meet ends up as one payload shape, ``{type, message, step,
details}``, stored on the step and the execution. ``type`` is what a caller branches
on; ``retryable`` is the only thing the retry policy looks at.
"""
from __future__ import annotations

from typing import Any, ClassVar

from providers.errors import ProviderError

INTERNAL_ERROR = "InternalError"


class EngineError(Exception):
    """Base of the engine's own errors. ``type`` is the class name unless set explicitly."""

    type: ClassVar[str] = "EngineError"
    default_retryable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that does not name its type is named after itself, so the payload
        # type always matches the class a developer greps for.
        if "type" not in cls.__dict__:
            cls.type = cls.__name__

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.retryable: bool = self.default_retryable if retryable is None else retryable
        self.retry_after: float | None = retry_after

    def to_payload(self, step_name: str | None) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "step": step_name, "details": self.details}


class TemplateError(EngineError):
    """A template or expression does not parse, uses an undefined name, breaks the
    sandbox or exceeds a limit. Never retried: the same template fails the same way."""


class InvalidOutput(EngineError):
    """A step's output does not match its ``output_format`` (e.g. JSON that does not parse).
    Retried only when ``retry_config.retry_on`` lists ``invalid_output``."""


class ConfigError(EngineError):
    """The step's definition cannot run (unknown step type, missing model, bad target)."""


class InputValidationError(EngineError):
    """Inputs do not match the workflow's variables. ``errors`` names every offender."""

    def __init__(self, errors: dict[str, str], message: str | None = None) -> None:
        self.errors: dict[str, str] = dict(errors)
        summary = "; ".join(f"{name}: {text}" for name, text in self.errors.items())
        super().__init__(message or f"Invalid input. {summary}", details={"errors": self.errors})


def error_payload(exc: BaseException, step_name: str | None) -> dict[str, Any]:
    """The stored payload for any exception a step can meet.

    Provider errors keep their own ``type`` (``RateLimited``, ``MissingCredentials``...)
    so users see the vendor's problem, not a generic engine failure.
    """
    if isinstance(exc, EngineError):
        return exc.to_payload(step_name)
    if isinstance(exc, ProviderError):
        details = dict(exc.details)
        if exc.status_code is not None:
            details.setdefault("status_code", exc.status_code)
        if exc.retry_after is not None:
            details.setdefault("retry_after", exc.retry_after)
        return {"type": exc.type, "message": exc.message, "step": step_name, "details": details}
    # Unexpected: report the exception class and message, never a traceback (it may
    # hold prompt text or secrets and means nothing to a workflow builder).
    return {
        "type": INTERNAL_ERROR,
        "message": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
        "step": step_name,
        "details": {},
    }


def is_retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False)) if isinstance(exc, (EngineError, ProviderError)) else False


def retry_after_of(exc: BaseException) -> float | None:
    return getattr(exc, "retry_after", None) if isinstance(exc, (EngineError, ProviderError)) else None
