"""Request ids: one per request, in every log line it causes and in its response. Probes
(/healthz, /readyz) answered whatever the Host header."""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from functools import lru_cache

from django.http import HttpRequest, HttpResponse
from django.urls import resolve, reverse

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


PROBES = ("healthz", "readyz")  # URL names (promptpilot/urls.py)


@lru_cache(maxsize=1)
def _probe_paths() -> frozenset[str]:
    return frozenset(reverse(name) for name in PROBES)


class ProbeMiddleware:
    """Answers /healthz and /readyz before CommonMiddleware checks the Host header against
    ALLOWED_HOSTS: a container's health check calls 127.0.0.1 and Kubernetes calls the
    pod's address, which ALLOWED_HOSTS (pilot.example.com) rightly does not list, so the
    probe would answer 400 and the instance would never turn healthy. The probes build no
    URL from the host; every other path is checked as before."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD") and request.path_info.rstrip("/") in _probe_paths():
            match = resolve(request.path_info)
            return match.func(request, *match.args, **match.kwargs)
        return self.get_response(request)
