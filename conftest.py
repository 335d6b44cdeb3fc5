"""Shared fixtures for the whole suite.

Worker fixtures start real Celery worker and beat processes against the test database
(PostgreSQL) and the test broker (Redis). A missing service FAILS those tests: it never
skips them.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from workflows.tests.support.processes import ServiceProcess, start_beat, start_worker, stop_all

# Durability knobs for worker processes: short leases so lost workers are noticed quickly.
SERVICE_TUNING = {
    "PROMPTPILOT_STEP_LEASE_SECONDS": "3",
    "PROMPTPILOT_REAPER_INTERVAL_SECONDS": "1",
    "PROMPTPILOT_ENQUEUE_GRACE_SECONDS": "3",
    "PROMPTPILOT_MAX_LOST_ATTEMPTS": "3",
    "PROMPTPILOT_PROVIDER_MODULES": "workflows.tests.support.providers",
}


def _flush_retrying_deadlocks() -> None:
    """Transactional tests end with ``flush`` (``_flush_only_tables_with_rows``). The real
    worker and beat processes of the worker tests keep sweeping the same database (the
    reaper every second): PostgreSQL may pick the flush as a deadlock's victim, or a worker
    may have written a row referencing one the flush deletes (the deferred foreign key
    fails at its commit). Try it again: it then deletes that row too."""
    import time

    from django.core.management.base import CommandError
    from django.core.management.commands import flush
    from django.db import IntegrityError, OperationalError

    original = flush.Command.handle
    if getattr(original, "retries_deadlocks", False):
        return

    def handle(self, *args, **options):
        for attempt in range(5):
            try:
                return original(self, *args, **options)
            except CommandError as exc:
                cause = exc.__cause__
                concurrent_write = isinstance(cause, IntegrityError) or (
                    isinstance(cause, OperationalError) and "deadlock" in str(cause))
                if attempt == 4 or not concurrent_write:
                    raise
                time.sleep(0.2 * (attempt + 1))

    handle.retries_deadlocks = True
    flush.Command.handle = handle


def _flush_only_tables_with_rows() -> None:
    """Each transactional test's ``flush`` empties only the tables that have rows (one query
    finds them), and on PostgreSQL with DELETE, not TRUNCATE. The database ends as after
    Django's TRUNCATE of every table (the sequences are not reset either way; post_migrate
    then recreates the content types and permissions as before), but a TRUNCATE costs per
    table named and waits for every other session's lock on each (the beat and workers of
    the worker tests), while a test leaves rows in a handful of small tables. The foreign
    keys are deferred to the end of the flush's transaction, so the order of the DELETEs
    does not matter. ``manage.py flush`` itself (which resets the sequences) keeps Django's
    statement."""
    from django.core.management.commands import flush

    original = flush.sql_flush
    if getattr(original, "only_tables_with_rows", False):
        return

    def sql_flush(style, connection, reset_sequences=True, allow_cascade=False):
        if reset_sequences:
            return original(style, connection, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        with_rows = _tables_with_rows(connection, tables)
        if not with_rows:  # Django's own statement: it is what lets post_migrate run again
            return original(style, connection, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        if connection.vendor != "postgresql":
            return connection.ops.sql_flush(style, with_rows, reset_sequences=False, allow_cascade=allow_cascade)
        quote = connection.ops.quote_name
        return ["SET CONSTRAINTS ALL DEFERRED", *(f"DELETE FROM {quote(table)}" for table in with_rows)]

    sql_flush.only_tables_with_rows = True
    flush.sql_flush = sql_flush


def _tables_with_rows(connection, tables: list[str]) -> list[str]:
    if not tables:
        return []
    quote = connection.ops.quote_name
    query = " UNION ALL ".join(f"SELECT %s WHERE EXISTS (SELECT 1 FROM {quote(table)})" for table in tables)
    with connection.cursor() as cursor:
        cursor.execute(query, tables)
        return [row[0] for row in cursor.fetchall()]


_flush_retrying_deadlocks()
_flush_only_tables_with_rows()


@pytest.fixture(autouse=True)
def _fresh_failure_counts():
    """Failed-credential windows (promptpilot/common/throttling.py) live in the default
    cache: no test inherits another's wrong passwords or wrong API keys."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _single_pass_means_no_fast_statement_branch(request, monkeypatch):
    """``make test``'s second pass (PROMPTPILOT_FAST_STATEMENTS=false) leaves out tests marked
    ``single_pass``: only ``transitions.fast_statements()`` reads that setting, so a test that
    never calls it runs the same code both ways. This keeps the mark honest: a marked test
    that reaches the branch fails. (A worker process is out of sight: never mark worker tests.)"""
    if request.node.get_closest_marker("single_pass") is None:
        yield
        return
    if request.node.get_closest_marker("worker") is not None:
        pytest.fail("a worker test reaches transitions in its worker process: it cannot be single_pass")
    from workflows.services import transitions

    original, calls = transitions.fast_statements, []
    monkeypatch.setattr(transitions, "fast_statements", lambda: calls.append(1) or original())
    yield
    if calls:
        pytest.fail("marked single_pass, yet it reaches transitions.fast_statements(): the second pass must run it")


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="builder", password="pw-builder-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="intruder", password="pw-intruder-123")


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def other_api(other_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(other_user)
    return client


# --- real services -------------------------------------------------------------------


def _require_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        pytest.fail(f"Redis is required at {url} for worker tests ({exc}). Start it (see README).", pytrace=False)


@pytest.fixture(scope="session")
def broker_url() -> str:
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        pytest.fail(
            f"Worker tests need the Redis broker; CELERY_BROKER_URL is {url!r}. Run them with `make test`.",
            pytrace=False,
        )
    _require_redis(url)
    import redis

    redis.Redis.from_url(url).flushdb()  # a dedicated database number: stale messages from earlier runs go
    return url


@pytest.fixture(scope="session")
def service_env(django_db_setup, django_db_blocker, broker_url, tmp_path_factory) -> dict[str, str]:
    """Environment for worker/beat processes: the test database and the test broker."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.fail("Worker tests need PostgreSQL: run them with `make test` (DATABASE_URL).", pytrace=False)
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    env = dict(os.environ)
    env.update(SERVICE_TUNING)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "promptpilot.settings.test",
            "DATABASE_URL": f"postgres://{db['USER']}{password}@{host}:{port}/{db['NAME']}",
            "CELERY_BROKER_URL": broker_url,
            "PROMPTPILOT_PROBE_LOG": str(tmp_path_factory.mktemp("probe") / "calls.jsonl"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def probe_log(service_env) -> Path:
    return Path(service_env["PROMPTPILOT_PROBE_LOG"])


@pytest.fixture(scope="session")
def beat(service_env, tmp_path_factory) -> Iterator[ServiceProcess]:
    """One beat process for the session: sends the reaper sweep every second."""
    process = start_beat(service_env, tmp_path_factory.mktemp("beat"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shared_worker(service_env, tmp_path_factory, beat) -> Iterator[ServiceProcess]:
    """A worker kept for one test module, for tests that do not kill workers. Module
    scoped so it is gone before tests that start (and kill) workers of their own."""
    process = start_worker("shared", service_env, tmp_path_factory.mktemp("shared-worker"))
    yield process
    process.stop()


@pytest.fixture
def workers(service_env, tmp_path, beat) -> Iterator:
    """Start workers of your own inside a test: ``workers("a")``; all are stopped after it."""
    started: list[ServiceProcess] = []

    def start(name: str | None = None, *pool_args: str) -> ServiceProcess:
        process = start_worker(name or f"w{uuid.uuid4().hex[:6]}", service_env, tmp_path, *pool_args)
        started.append(process)
        return process

    yield start
    stop_all(started)
