"""Render every API error as JSON ``{"message", "extra", ...}``; never a 500 page."""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from .errors import ApplicationError

logger = logging.getLogger(__name__)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = _first_message(value)
            return inner if key in ("non_field_errors", "detail") else f"{key}: {inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def api_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response(
            {"message": exc.message, "code": exc.code, "extra": exc.extra},
            status=exc.status_code,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        logger.exception("api.unhandled_error", exc_info=exc)
        return Response(
            {"message": "Something went wrong on our side; the request changed nothing. Try again.",
             "code": "server_error", "extra": {}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        body = {"message": "The request is invalid: " + _first_message(detail), "code": "invalid",
                "extra": {"fields": detail}}
    elif isinstance(exc, exceptions.ParseError):
        body = {"message": f"The body is not valid JSON ({_first_message(detail)}). Send a JSON object.",
                "code": "parse_error", "extra": {}}
    else:
        code = getattr(exc, "default_code", "error")
        body = {"message": _first_message(detail), "code": code, "extra": {}}
    response.data = body
    return response
