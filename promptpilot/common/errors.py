"""One error family for business rules; the API renders it with one handler."""
from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A business rule said no. ``message`` is a sentence telling the user what to change."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ValidationFailed(ApplicationError):
    status_code = 400
    code = "validation_failed"


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class Conflict(ApplicationError):
    status_code = 409
    code = "conflict"
