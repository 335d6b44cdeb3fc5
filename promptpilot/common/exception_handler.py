"""Render every API error as JSON ``{"message", "code", "extra"}``; never a 500 page."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from .errors import ApplicationError

logger = logging.getLogger(__name__)


def _flatten(detail: Any, prefix: str = "") -> list[tuple[str, str]]:
    """DRF error detail -> ``[("steps[1].config", "message"), ...]``, keeping list indexes."""
    if isinstance(detail, dict):
        pairs: list[tuple[str, str]] = []
        for key, value in detail.items():
            if key in ("non_field_errors", "detail"):
                path = prefix
            elif isinstance(key, int):  # list serializers report errors by item index
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            pairs.extend(_flatten(value, path))
        return pairs
    if isinstance(detail, list):
        if any(isinstance(item, (dict, list)) for item in detail):
            pairs = []
            for index, item in enumerate(detail):
                if item in ({}, [], None, ""):
                    continue
                if isinstance(item, (dict, list)):
                    pairs.extend(_flatten(item, f"{prefix}[{index}]"))
                else:
                    pairs.append((prefix, str(item)))
            return pairs
        return [(prefix, str(item)) for item in detail]
    return [(prefix, str(detail))]


def _errors_by_path(detail: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for path, message in _flatten(detail):
        errors.setdefault(path or "body", []).append(message)
    return errors


def _first_message(detail: Any) -> str:
    pairs = _flatten(detail)
    if not pairs:
        return str(detail)
    path, message = pairs[0]
    return f"{path}: {message}" if path else message


def _body(message: str, code: str, extra: dict | None = None) -> dict[str, Any]:
    return {"message": message, "code": code, "extra": extra or {}}


def api_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(_body(exc.message, exc.code, exc.extra), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        # Django raises this while DRF reads the body; without this branch it would be a 500.
        return Response(
            _body("The request body is too large; send at most 1 MiB of JSON.", "request_too_large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, RecursionError):
        return Response(
            _body("The JSON body is nested too deeply; flatten it and try again.", "parse_error"),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DataError):
        # e.g. a \u0000 character or a number PostgreSQL's JSON type cannot store.
        set_rollback()
        logger.warning("api.data_error", exc_info=exc)
        return Response(
            _body("The request holds a value the database cannot store (such as a \\u0000 character "
                  "or a number out of range); remove it and try again.", "invalid_data"),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, (ProtectedError, RestrictedError)):
        set_rollback()
        return Response(
            _body("This object is still referenced by other objects; remove those references first.", "conflict"),
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(_body("The request was rejected as malformed.", "bad_request"), status=400)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        logger.exception("api.unhandled_error", exc_info=exc)
        set_rollback()
        return Response(
            _body("Something went wrong on our side; the request changed nothing. Try again.", "server_error"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        body = _body(
            "The request is invalid: " + _first_message(detail),
            "invalid",
            {"fields": detail, "errors": _errors_by_path(detail)},
        )
    elif isinstance(exc, exceptions.ParseError):
        body = _body(f"The body is not valid JSON ({_first_message(detail)}). Send a JSON object.", "parse_error")
    elif isinstance(exc, exceptions.NotAuthenticated):
        body = _body(
            "Authentication required: send 'Authorization: Token <token>' (get one from POST /api/auth/token/).",
            "not_authenticated",
        )
    elif isinstance(exc, exceptions.AuthenticationFailed):
        body = _body(
            f"{_first_message(detail)} Get a new token from POST /api/auth/token/.", "authentication_failed"
        )
    else:
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException) and isinstance(exc.detail, exceptions.ErrorDetail):
            code = exc.detail.code or code
        body = _body(_first_message(detail), code)
    response.data = body
    return response
