"""Prepared statements for the few queries on the hottest paths (PostgreSQL only).

Django binds parameters on the client and leaves psycopg's prepared statements off (for
connection poolers' sake), so PostgreSQL parses and plans every statement anew. For the
statements each webhook delivery runs, that planning and psycopg's client-side quoting
were a large share of the cost (bench/README.md, "Webhooks benchmark"). ``run_prepared``
sends such a statement with server-side binding and prepares it once per connection.

Off with ``PROMPTPILOT_PREPARED_STATEMENTS=false`` (e.g. behind a pooler in transaction
mode that does not keep prepared statements), on SQLite, and while Django logs queries
(``DEBUG``, query-counting tests): the statement then runs through Django's cursor.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction


def run_prepared(sql: str, params: Sequence[Any], *, fetch: bool = False, read_only: bool = False,
                 caller_recovers: bool = False) -> tuple | None:
    """Execute ``sql`` (``%s`` placeholders) on the current connection, in the current
    transaction (or autocommit); return its first row when ``fetch``.

    When this is the request's first statement, it can serve as the connection's health
    check (``CONN_HEALTH_CHECKS``), saving the extra ``SELECT 1`` round trip:
    ``read_only`` (the statement changes nothing): if the persistent connection turns out
    to be broken (e.g. PostgreSQL restarted), it is sent again once on a fresh one;
    ``caller_recovers``: the connection is closed and the error raised, for a caller that
    knows how to go on (e.g. a write that is idempotent by a unique key).
    """
    db = transaction.get_connection()
    if db.vendor != "postgresql" or db.queries_logged or not settings.PROMPTPILOT["PREPARED_STATEMENTS"]:
        with db.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if fetch else None
    checking = ((read_only or caller_recovers) and db.connection is not None and db.health_check_enabled
                and not db.health_check_done and not db.in_atomic_block)
    if checking:
        try:
            row = _execute(db, sql, params, fetch)
        except (OperationalError, InterfaceError):
            db.close()  # broken: what Django's health check would have found
            if not read_only:
                raise
            row = _execute(db, sql, params, fetch)
        db.health_check_done = True
        return row
    db.close_if_health_check_failed()
    return _execute(db, sql, params, fetch)


def _execute(db, sql: str, params: Sequence[Any], fetch: bool) -> tuple | None:
    db.ensure_connection()
    with db.wrap_database_errors, _preparing_cursor(db) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if fetch else None


_preparing_cursor_class = None


def _preparing_cursor(db):
    """A psycopg cursor on Django's connection, binding on the server and preparing each
    statement it runs (once per connection: psycopg keeps them)."""
    global _preparing_cursor_class
    if _preparing_cursor_class is None:  # built once: psycopg is imported only on PostgreSQL
        from django.db.backends.postgresql.base import ServerBindingCursor

        class PreparingCursor(ServerBindingCursor):
            def execute(self, query, params=None, **kwargs):
                return super().execute(query, params, prepare=True, **kwargs)

        _preparing_cursor_class = PreparingCursor
    return _preparing_cursor_class(db.connection)


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A cursor for the hand-written statements of the hottest paths (the engine's
    transitions): the same switches as ``run_prepared``, for callers that run several
    statements in one transaction. The statements must spell out the types of parameters
    PostgreSQL cannot infer (``%(x)s::timestamptz`` in a SELECT list, ``NULL`` values)."""
    db = transaction.get_connection()
    if db.vendor != "postgresql" or db.queries_logged or not settings.PROMPTPILOT["PREPARED_STATEMENTS"]:
        with db.cursor() as cursor:
            yield cursor
        return
    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors, _preparing_cursor(db) as cursor:
        yield cursor


# --- model instances from hand-written statements --------------------------------------


def concrete_fields(model, names) -> list:
    """``model``'s concrete fields among ``names``, in the order ``Model.from_db`` expects."""
    wanted = {model._meta.get_field(name) for name in names}
    return [f for f in model._meta.concrete_fields if f in wanted]


def instance_from_row(db, model, fields, values):
    """A model instance from a row of ``fields``' columns, converted as the ORM converts
    them (fields left out are deferred: loaded on access, one query each)."""
    converted = []
    for field, value in zip(fields, values, strict=True):
        if value is not None:
            column, converters = _converters(db, field)
            for converter in converters:
                value = converter(value, column, db)
        converted.append(value)
    return model.from_db(db.alias, [f.attname for f in fields], converted)


@lru_cache(maxsize=64)
def _converters(db, field):
    # The backend's converters (SQLite: UUIDs, booleans, datetimes) then the field's own, as
    # the ORM's compiler applies them; the same for every row, so looked up once.
    column = field.get_col(field.model._meta.db_table)
    return column, (*db.ops.get_db_converters(column), *column.get_db_converters(db))


def fetch_by_pk(model, pk, names: tuple[str, ...]):
    """``model.objects.only(*names).filter(pk=pk).first()`` as one prepared statement: for
    the reads every run or delivery makes, where compiling the ORM's query cost more than
    running it."""
    db = transaction.get_connection()
    fields = concrete_fields(model, names)
    row = run_prepared(_by_pk_sql(model, tuple(fields)), [model._meta.pk.get_db_prep_value(pk, db)],
                       fetch=True, read_only=True)
    return None if row is None else instance_from_row(db, model, fields, row)


@lru_cache(maxsize=16)
def _by_pk_sql(model, fields: tuple) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    return f"SELECT {columns} FROM {quote(model._meta.db_table)} WHERE {quote(model._meta.pk.column)} = %s"


# --- connections of a many-threaded process (the worker runtime) -----------------------


def pool_connections(*, options: dict[str, Any], application_name: str) -> bool:
    """Take this process's PostgreSQL connections from a psycopg pool of ``options``
    (``max_size`` bounds them, whatever the number of threads), each connection labelled
    ``application_name`` in ``pg_stat_activity``. Applies to connections opened from now on:
    call it before the process's first query. Answers whether it applied (PostgreSQL only)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        return False
    # NOTE: in place: Django's connection handler holds this very dict.
    database["CONN_MAX_AGE"] = 0  # a pooled connection goes back to the pool, not away
    database.setdefault("OPTIONS", {})["pool"] = dict(options)
    database["OPTIONS"].setdefault("application_name", application_name)
    return True


def pooled() -> bool:
    return bool(connection.settings_dict.get("OPTIONS", {}).get("pool"))


def release_connection() -> None:
    """Give this thread's connection back to the pool before it waits on the outside world
    (a model or HTTP call), so that a hundred such waits hold no connection between them.
    Without a pool nothing happens: closing would cost a new connection on the next query.
    Never inside a transaction."""
    if connection.connection is not None and not connection.in_atomic_block and pooled():
        connection.close()
