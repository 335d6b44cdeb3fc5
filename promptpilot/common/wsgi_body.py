"""Request bodies sent with ``Transfer-Encoding: chunked`` (no Content-Length).

Django's WSGIRequest reads ``CONTENT_LENGTH`` bytes and, without the header, none: a
chunked webhook looked empty (its signature then failed). Gunicorn de-chunks the stream
and marks it ``wsgi.input_terminated`` (readable to its end), so this WSGI wrapper reads
such a body, at most one byte past ``DATA_UPLOAD_MAX_MEMORY_SIZE``, and hands Django the
bytes with their length: a body over the limit is still refused by Django's own check
(413) without being read further.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any

from django.conf import settings

DEFAULT_LIMIT = 2_621_440  # Django's own default for DATA_UPLOAD_MAX_MEMORY_SIZE


def _chunked_without_length(environ: dict[str, Any]) -> bool:
    return (
        not environ.get("CONTENT_LENGTH")
        and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        and bool(environ.get("wsgi.input_terminated"))
    )


class ChunkedBodyMiddleware:
    """Wraps a WSGI application (see promptpilot/wsgi.py)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _chunked_without_length(environ):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or DEFAULT_LIMIT
            body = environ["wsgi.input"].read(limit + 1)
            environ["wsgi.input"] = BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)
