"""The receiver's database statements (promptpilot/common/db.py): prepared once per
connection, and a persistent connection that PostgreSQL dropped between two deliveries
costs the second delivery nothing (its first statement is the health check)."""
from __future__ import annotations

import time

import psycopg
import pytest
from django.db import close_old_connections, connection

from triggers.services import webhook_fast_path
from triggers.tests.helpers import body_bytes, deliver, signed_headers
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit, as under gunicorn


def _dsn() -> str:
    s = connection.settings_dict
    return f"host={s['HOST'] or '127.0.0.1'} port={s['PORT'] or 5432} user={s['USER']} dbname={s['NAME']}"


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("known", [True, False], ids=["known trigger (fast path)", "unknown trigger (full way)"])
def test_a_delivery_after_the_server_dropped_the_connection_is_accepted(anon, webhook, known):
    trigger, secret = webhook
    body = body_bytes({"customer": "Ada"})
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body)).status_code == 202
    if not known:
        webhook_fast_path.forget(trigger.pk)
    assert connection.connection is not None, "the connection persists between requests (CONN_MAX_AGE)"
    backend = connection.connection.info.backend_pid

    with psycopg.connect(_dsn(), autocommit=True) as admin:  # as a PostgreSQL restart would
        admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        for _ in range(50):
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]).fetchone():
                break
            time.sleep(0.05)

    close_old_connections()  # what each request starts with under a server (the test client skips it)
    response = deliver(anon, trigger.pk, body, signed_headers(secret, body))
    assert response.status_code == 202, response.content
    assert WorkflowExecution.objects.filter(pk=response.json()["execution_id"], status="PENDING").exists()
    assert connection.connection.info.backend_pid != backend


def test_the_receiver_statements_are_prepared_once_per_connection(anon, webhook):
    trigger, secret = webhook
    for _ in range(3):
        body = body_bytes({"customer": "Ada"})
        assert deliver(anon, trigger.pk, body, signed_headers(secret, body)).status_code == 202
    prepared = _prepared_statements()
    assert any(s.startswith("SELECT") and "FROM \"triggers_workflowtrigger\"" in s for s in prepared), prepared
    inserts = [s for s in prepared if s.startswith("WITH _row0 AS (INSERT INTO \"workflow_executions\"")]
    assert len(inserts) == 2, "the full way's INSERT and the fast path's guarded one"
    assert len(prepared) == len(set(prepared)) == 3, "each statement prepared once, then reused"


def test_prepared_statements_can_be_turned_off(anon, webhook, settings):
    settings.PROMPTPILOT = {**settings.PROMPTPILOT, "PREPARED_STATEMENTS": False}
    trigger, secret = webhook
    connection.close()  # a fresh connection: nothing prepared on it yet
    body = body_bytes({"customer": "Ada"})
    assert deliver(anon, trigger.pk, body, signed_headers(secret, body)).status_code == 202
    assert _prepared_statements() == []
