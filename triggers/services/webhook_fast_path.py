"""The webhook receiver's common case in one statement (PostgreSQL).

A delivery to a trigger this process has already accepted one for is checked against
what it read then (the trigger's secrets, config and name, its workflow, the workflow's
latest version and variables), and its invocation and PENDING execution are written in
one prepared INSERT without reading the trigger again. The INSERT re-checks all of that
in the database, atomically: the execution's ``workflow_id`` is a sub-query that finds the
trigger only if it is still an active WEBHOOK trigger with the same secrets, config and
name, on an active workflow whose latest version is the one remembered. If anything
changed, the sub-query is NULL, the NOT NULL column refuses the row, nothing is written,
and the delivery goes the full way (``webhook_receive``), which reads the trigger again.

Everything else goes the full way too: the first delivery to a trigger in a process, a
signature that does not verify, a body that is not a JSON object, inputs that do not fit,
a repeated ``webhook-id`` (the unique index refuses it here, and the full way records
the duplicate), SQLite. Both ways write the same rows (tests/api/test_webhook_fast_path.py).
Measured in bench/README.md ("Webhooks benchmark"): the full way's trigger read is about a
fifth of a delivery's cost.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from psycopg.sql import Literal

from promptpilot.common.db import run_prepared
from providers.types import TokenUsage
from workflows.engine.errors import InputValidationError, TemplateError
from workflows.engine.inputs import validate_inputs
from workflows.models import ExecutionStatus, TriggerType, Workflow, WorkflowExecution, WorkflowVersion
from workflows.services.definitions import workflow_version_variables
from workflows.services.dispatch import enqueue_execution

from ..models import InvocationStatus, TriggerInvocation, TriggerKind, WorkflowTrigger
from .firing import last_triggered_touch

logger = logging.getLogger(__name__)

MAX_REMEMBERED = 1024  # triggers per process
UNIQUE_VIOLATION = "23505"  # a repeated webhook-id: what is remembered is still right


@dataclass
class Remembered:
    """What a delivery needs of its trigger, as read by the last full-way delivery."""

    pk: uuid.UUID
    name: str
    config: dict[str, Any]
    secret_encrypted: str
    previous_secret_encrypted: str | None
    previous_secret_expires_at: datetime | None
    config_json: str  # as the guard compares it
    workflow_id: int
    version_id: int
    variables: tuple[dict[str, Any], ...]
    last_triggered_at: datetime | None  # kept up to date by this process's deliveries


@dataclass(frozen=True)
class Accepted:
    """An accepted delivery, as the receiver answers it (the fields of a TriggerInvocation it reads)."""

    pk: uuid.UUID  # the invocation
    execution_id: uuid.UUID
    status: str = InvocationStatus.ACCEPTED


_remembered: dict[str, Remembered] = {}
_lock = threading.Lock()


def remember(trigger: WorkflowTrigger) -> None:
    """After a delivery accepted the full way: the next ones to this trigger may go fast."""
    version_id = getattr(trigger, "latest_version_id", None)
    if version_id is None or not available():
        return
    entry = Remembered(
        pk=trigger.pk, name=trigger.name, config=trigger.config or {}, config_json=json.dumps(trigger.config or {}),
        secret_encrypted=trigger.secret_encrypted,
        previous_secret_encrypted=trigger.previous_secret_encrypted,
        previous_secret_expires_at=trigger.previous_secret_expires_at, workflow_id=trigger.workflow_id,
        version_id=version_id, variables=tuple(workflow_version_variables(version_id=version_id)),
        last_triggered_at=trigger.last_triggered_at,
    )
    with _lock:
        if len(_remembered) >= MAX_REMEMBERED:
            _remembered.clear()  # rare (a process serving over a thousand triggers): start over
        _remembered[str(trigger.pk)] = entry


def forget(trigger_id: Any) -> None:
    with _lock:
        _remembered.pop(str(trigger_id), None)


def available() -> bool:
    return connection.vendor == "postgresql" and settings.PROMPTPILOT["PREPARED_STATEMENTS"]


def remembered(trigger_id: Any) -> Remembered | None:
    return _remembered.get(str(trigger_id)) if available() else None


def secrets_of(entry: Remembered, now: datetime) -> list[str]:
    from .secrets import secret_decrypt

    secrets_ = [secret_decrypt(entry.secret_encrypted)]
    if entry.previous_secret_encrypted and entry.previous_secret_expires_at and \
            entry.previous_secret_expires_at > now:
        secrets_.append(secret_decrypt(entry.previous_secret_encrypted))
    return secrets_


def accept(entry: Remembered, *, msg_id: str, payload: dict[str, Any], inputs: dict[str, Any],
           request_meta: dict[str, Any]) -> Accepted | None:
    """Write the invocation and the PENDING execution of a verified delivery, or return
    None when the full way must handle it (see the module's docstring)."""
    try:
        validated = validate_inputs(list(entry.variables), inputs)
    except InputValidationError:
        return None  # the full way records the INVALID_INPUT invocation
    now = timezone.now()
    db = transaction.get_connection()
    execution_id, invocation_id = uuid.uuid4(), uuid.uuid4()
    sql = _statement()
    metadata = {"payload": payload, "trigger_id": str(entry.pk), "trigger_name": entry.name,
                "invocation_id": str(invocation_id), "delivery_id": msg_id}
    # In the statement's parameter order (see _statement): the execution's, the guard's,
    # then the invocation's.
    params = [
        execution_id,
        entry.pk, entry.secret_encrypted, entry.previous_secret_encrypted, entry.previous_secret_expires_at,
        entry.config_json, entry.name, entry.workflow_id, entry.version_id,  # the guard, in place of workflow_id
        entry.version_id, entry.pk, _json(db, validated), _json(db, metadata), now, now,
        invocation_id, entry.pk, now, msg_id, _json(db, payload), _json(db, request_meta), execution_id,
    ]
    try:
        with transaction.atomic() if db.in_atomic_block else nullcontext():
            run_prepared(sql, params, caller_recovers=True)
    except IntegrityError as exc:
        # The trigger changed (the guard found nothing: a NOT NULL violation) or the
        # webhook-id repeats: the full way reads the trigger again and records what happened.
        if getattr(exc.__cause__, "sqlstate", None) != UNIQUE_VIOLATION:
            forget(entry.pk)
        return None
    except (OperationalError, InterfaceError):
        # A broken persistent connection (closed by now): the full way starts on a fresh one.
        # Had the INSERT committed after all, the full way finds the webhook-id taken and
        # answers with that run.
        return None
    enqueue_execution(execution_id)
    last_triggered_touch(entry, now)
    logger.info("execution.created", extra={"execution_id": str(execution_id), "workflow_id": entry.workflow_id})
    return Accepted(pk=invocation_id, execution_id=execution_id)


# The values each accepted delivery's rows hold that do not depend on the delivery (the
# rest of each model's fields take their defaults). They are written into the statement as
# literals; only the columns named in _DYNAMIC are parameters.
_FIXED = {
    WorkflowExecution: {"trigger_type": TriggerType.WEBHOOK, "status": ExecutionStatus.PENDING,
                        "aggregate_tokens": TokenUsage().as_dict()},
    TriggerInvocation: {"status": InvocationStatus.ACCEPTED, "verified": True},
}
_DYNAMIC = {
    WorkflowExecution: ("id", "workflow_id", "version_id", "trigger_id", "input", "metadata", "created_at",
                        "enqueued_at"),
    TriggerInvocation: ("id", "trigger_id", "received_at", "delivery_id", "payload", "request_meta", "execution_id"),
}


@lru_cache(maxsize=1)
def _statement() -> str:
    """Both rows in one INSERT statement, the execution's ``workflow_id`` being the guard.

    Parameters, in the models' field order: the execution's id, the guard's eight (in
    place of ``workflow_id``: trigger id, secret, previous secret, its expiry, config as
    JSON text, name, workflow id, version id), the execution's version, trigger, input,
    metadata, created_at and enqueued_at, then the invocation's id, trigger, received_at,
    delivery id, payload, request_meta and execution id.
    """
    quote = connection.ops.quote_name
    t, w, v = (quote(m._meta.db_table) for m in (WorkflowTrigger, Workflow, WorkflowVersion))
    guard = (
        f"(SELECT t.{quote('workflow_id')} FROM {t} t JOIN {w} w ON w.{quote('id')} = t.{quote('workflow_id')} "
        f"WHERE t.{quote('id')} = %s AND t.{quote('type')} = '{TriggerKind.WEBHOOK}' AND t.{quote('is_active')} "
        f"AND w.{quote('is_active')} AND t.{quote('secret_encrypted')} = %s "
        f"AND t.{quote('previous_secret_encrypted')} IS NOT DISTINCT FROM %s "
        f"AND t.{quote('previous_secret_expires_at')} IS NOT DISTINCT FROM %s "
        f"AND t.{quote('config')} = %s::jsonb AND t.{quote('name')} = %s AND t.{quote('workflow_id')} = %s "
        f"AND (SELECT v.{quote('id')} FROM {v} v WHERE v.{quote('workflow_id')} = t.{quote('workflow_id')} "
        f"ORDER BY v.{quote('number')} DESC LIMIT 1) = %s)"
    )
    db = transaction.get_connection()
    inserts = []
    for model in (WorkflowExecution, TriggerInvocation):
        columns, values = [], []
        for field in model._meta.local_concrete_fields:
            columns.append(quote(field.column))
            if field.attname == "workflow_id" and model is WorkflowExecution:
                values.append(guard)
            elif field.attname in _DYNAMIC[model]:
                values.append("%s")
            else:
                value = _FIXED[model].get(field.attname, field.get_default())
                literal = Literal(field.get_db_prep_save(value, db)).as_string(None)
                values.append(literal.replace("%", "%%"))  # the statement has parameters
        inserts.append(f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "
                       f"VALUES ({', '.join(values)})")
    return f"WITH _row0 AS ({inserts[0]}) {inserts[1]}"


def _json(db, value: Any):
    return db.ops.adapt_json_value(value, None)


def inputs_of(entry: Remembered, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The delivery's inputs as the full way computes them, or None if its input_mapping fails."""
    from .webhooks import webhook_inputs

    try:
        return webhook_inputs(trigger=entry, payload=payload,
                              variables=[variable["name"] for variable in entry.variables])
    except TemplateError:
        return None
