"""Structured logs: every record carries the ids of the work it belongs to.

``log_context(execution_id=..., step=...)`` sets ids for a block (the request middleware
sets ``request_id``, a step attempt its execution, step and attempt); ``ContextFilter``
copies them onto each record that passes the handler, so no call site repeats them.
``logging_config`` builds Django's ``LOGGING``: JSON lines (python-json-logger) or a
human-readable console line, both showing the same fields (docs/OPERATIONS.md, "Logs").
"""
from __future__ import annotations

import contextvars
import functools
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as LibraryJsonFormatter

FIELDS = ("request_id", "execution_id", "workflow_id", "step", "attempt", "trigger_id")
FORMATS = ("json", "console")
# Celery's own line for every task ("Task … received", "Task … succeeded in …s"): our step
# events say the same, with the run's ids, so these log warnings and errors only, unless
# the process logs at DEBUG (celery_task_level).
CELERY_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")

# Immutable: a block sets a new mapping, so an outer block's ids never change under it.
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "promptpilot_log_context", default=MappingProxyType({}))


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Within the block (this thread or task only), log records carry ``ids``; None values
    are left out, UUIDs logged as text. Nested blocks add to the outer one's ids."""
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise ValueError(f"Unknown log context field(s) {sorted(unknown)}; use {', '.join(FIELDS)}.")
    added = {key: str(value) if isinstance(value, uuid.UUID) else value
             for key, value in ids.items() if value is not None}
    token = _context.set(MappingProxyType({**_context.get(), **added}))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the current ``log_context`` ids onto the record; an ``extra`` given at the
    call site wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        # django.request logs a 4xx/5xx after the middleware's block has ended; its record
        # still holds the request, which holds the id.
        request_id = getattr(record.__dict__.get("request"), "request_id", None)
        if request_id and "request_id" not in record.__dict__:
            record.request_id = request_id
        return True


class AccessLogFilter(logging.Filter):
    """gunicorn's access line, also as fields: ``request_id`` (the ``X-Request-ID`` the
    response echoed: gunicorn logs after the request's ``log_context`` has ended),
    ``method``, ``path``, ``status_code`` and ``duration_ms``."""

    _ATOMS = {"request_id": "{x-request-id}o", "method": "m", "path": "U", "status_code": "s", "duration_ms": "M"}

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if not isinstance(atoms, Mapping):  # not gunicorn's access call: leave it alone
            return True
        for field, atom in self._ATOMS.items():
            value = dict.get(atoms, atom)  # dict.get: gunicorn's SafeAtoms answers "-" for a missing key
            if value not in (None, "", "-") and field not in record.__dict__:
                setattr(record, field, int(value) if field == "status_code" and str(value).isdigit() else value)
        return True


# Plain JSON values only (str, numbers, lists, dicts...), C speedups, no callback per value.
_encode_plain = json.JSONEncoder().encode


def _dumps(log_data: dict[str, Any], **options: Any) -> str:
    """The line's JSON. python-json-logger's own encoder (UUIDs, datetimes, exceptions, any
    object) builds a new encoder and calls back into Python for every value it does not
    know; our events log plain values, so it runs only for a record that needs it."""
    try:
        return _encode_plain(log_data)
    except (TypeError, ValueError):
        return json.dumps(log_data, **options)


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class JsonFormatter(LibraryJsonFormatter):
    """python-json-logger's formatter with ``time`` as text (ISO 8601, UTC, microseconds:
    what its ``timestamp`` option writes), built from the second's text, which the lines of
    one second share, instead of a datetime per record that the encoder then calls back
    for; and the encoder above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, json_serializer=_dumps, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        second, micro = divmod(round(record.created * 1_000_000), 1_000_000)
        log_data["time"] = f"{_utc_second(second)}.{micro:06d}+00:00"


_STANDARD = frozenset(RESERVED_ATTRS) | {"taskName", "color_message"}


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``: the JSON line's fields, for people."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in record.__dict__.items()
                          if key not in _STANDARD and not key.startswith("_"))
        if not extras:
            return line
        head, newline, trace = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {extras}{newline}{trace}"


def celery_task_level(level: str | int) -> int:
    """The level of CELERY_TASK_LOGGERS in a process that logs at ``level``: INFO becomes
    WARNING; DEBUG, WARNING and above stay (a logger's own level is the only check its
    records pass, so a lower one would let them through an ERROR-only process)."""
    number = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(number, int) or logging.DEBUG < number < logging.WARNING:
        return logging.WARNING
    return number


def set_process_level(level: str | int) -> None:
    """A worker's or beat's ``-l LEVEL``: the level of the whole process, as if configured."""
    logging.getLogger().setLevel(level.upper() if isinstance(level, str) else level)
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(celery_task_level(level))


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's ``LOGGING`` for ``log_format`` ("json" or "console") at ``level``."""
    if log_format not in FORMATS:
        raise ValueError(f"PROMPTPILOT_LOG_FORMAT is {log_format!r}; set it to json or console.")
    formatters = {
        "json": {
            "()": JsonFormatter,
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
        },
        "console": {"()": ConsoleFormatter, "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}, "access": {"()": AccessLogFilter}},
        "formatters": {log_format: formatters[log_format]},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["context"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # One INFO line per HTTP request to a model provider: the step's own events say more.
            "httpx": {"level": "WARNING"},
            "httpx2": {"level": "WARNING"},  # the Anthropic SDK's HTTP client
            "httpcore": {"level": "WARNING"},
            # gunicorn's own lines (boot, worker exits, the access log) go through the same
            # handler at the same level: configuring them here drops gunicorn's plain-text
            # handlers and the INFO level gunicorn sets on them (an access line is INFO, so
            # PROMPTPILOT_LOG_LEVEL=WARNING turns the access log off).
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True, "filters": ["access"]},
            **{name: {"level": celery_task_level(level)} for name in CELERY_TASK_LOGGERS},
        },
    }
