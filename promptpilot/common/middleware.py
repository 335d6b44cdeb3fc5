"""Request ids: one per request, in every log line it causes and in its response."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .logs import log_context

HEADER = "X-Request-ID"
# A caller's id is kept only if it is short and plain: it is written into every log line.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """Takes the caller's ``X-Request-ID`` (a proxy's, say) or makes one, sets it as the
    ``request_id`` of the request's log lines and echoes it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _ACCEPTED.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id
        with log_context(request_id=request_id):
            response = self.get_response(request)
        response[HEADER] = request_id
        return response
