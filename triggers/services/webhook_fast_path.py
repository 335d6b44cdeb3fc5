"""The webhook receiver's common case in one statement (PostgreSQL).

A delivery to a trigger this process has already accepted one for is checked against
what it read then (the trigger's secrets, config and name, its workflow, the workflow's
latest version and variables), and its invocation and PENDING execution are written by
``trigger_start`` → ``execution_start``, like every firing's, in their one INSERT
statement, without reading the trigger again. The statement re-checks all of that in the
database, atomically: the execution's ``workflow_id`` is a guard (``WorkflowGuard``), a
sub-query that finds the trigger only if it is still an active WEBHOOK trigger with the
same secrets, config and name, on an active workflow whose latest version is the one
remembered. If anything changed, the sub-query is NULL, the NOT NULL column refuses the
row, nothing is written, and the delivery goes the full way (``webhook_receive``), which
reads the trigger again.

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
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection

from workflows.engine.errors import TemplateError
from workflows.errors import InputValidationFailed
from workflows.models import Workflow, WorkflowVersion
from workflows.services.definitions import workflow_version_variables
from workflows.services.executions import WorkflowGuard

from ..models import TriggerInvocation, TriggerKind, WorkflowTrigger
from .firing import last_triggered_touch, trigger_start

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
    workflow_id: int
    version_id: int
    variables: tuple[dict[str, Any], ...]
    trigger: WorkflowTrigger  # a copy of the fields a firing writes (``last_triggered_at`` kept up to date)
    guard: WorkflowGuard  # the statement's re-check of all of the above


_remembered: dict[str, Remembered] = {}
_lock = threading.Lock()


def remember(trigger: WorkflowTrigger) -> None:
    """After a delivery accepted the full way: the next ones to this trigger may go fast."""
    version_id = getattr(trigger, "latest_version_id", None)
    if version_id is None or not available():
        return
    # Copies, not the request's objects: the entry is shared by the process's threads.
    copy = WorkflowTrigger(id=trigger.pk, type=TriggerKind.WEBHOOK, name=trigger.name,
                           workflow_id=trigger.workflow_id, last_triggered_at=trigger.last_triggered_at)
    copy.workflow = Workflow(id=trigger.workflow_id, name=trigger.workflow.name, is_active=True)
    entry = Remembered(
        pk=trigger.pk, name=trigger.name, config=trigger.config or {},
        secret_encrypted=trigger.secret_encrypted,
        previous_secret_encrypted=trigger.previous_secret_encrypted,
        previous_secret_expires_at=trigger.previous_secret_expires_at, workflow_id=trigger.workflow_id,
        version_id=version_id, variables=tuple(workflow_version_variables(version_id=version_id)),
        trigger=copy,
        guard=WorkflowGuard(_guard_sql(), (
            trigger.pk, trigger.secret_encrypted, trigger.previous_secret_encrypted,
            trigger.previous_secret_expires_at, json.dumps(trigger.config or {}), trigger.name,
            trigger.workflow_id, version_id,
        )),
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
           request_meta: dict[str, Any]) -> TriggerInvocation | None:
    """Fire the remembered trigger for a verified delivery (``trigger_start``, guarded) and
    return its ACCEPTED invocation, or None when the full way must handle it (see the
    module's docstring): nothing is written then."""
    try:
        invocation = trigger_start(trigger=entry.trigger, inputs=inputs, payload=payload, delivery_id=msg_id,
                                   verified=True, request_meta=request_meta, version_id=entry.version_id,
                                   guard=entry.guard)
    except InputValidationFailed:
        return None  # the full way records the INVALID_INPUT invocation
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
    last_triggered_touch(entry.trigger, invocation.execution.created_at)
    return invocation


@lru_cache(maxsize=1)
def _guard_sql() -> str:
    """The trigger as remembered, re-checked: answers its workflow id, or NULL if anything
    changed. Parameters: trigger id, secret, previous secret, its expiry, config as JSON
    text, name, workflow id, latest version id."""
    quote = connection.ops.quote_name
    t, w, v = (quote(m._meta.db_table) for m in (WorkflowTrigger, Workflow, WorkflowVersion))
    return (
        f"(SELECT t.{quote('workflow_id')} FROM {t} t JOIN {w} w ON w.{quote('id')} = t.{quote('workflow_id')} "
        f"WHERE t.{quote('id')} = %s AND t.{quote('type')} = '{TriggerKind.WEBHOOK}' AND t.{quote('is_active')} "
        f"AND w.{quote('is_active')} AND t.{quote('secret_encrypted')} = %s "
        f"AND t.{quote('previous_secret_encrypted')} IS NOT DISTINCT FROM %s "
        f"AND t.{quote('previous_secret_expires_at')} IS NOT DISTINCT FROM %s "
        f"AND t.{quote('config')} = %s::jsonb AND t.{quote('name')} = %s AND t.{quote('workflow_id')} = %s "
        f"AND (SELECT v.{quote('id')} FROM {v} v WHERE v.{quote('workflow_id')} = t.{quote('workflow_id')} "
        f"ORDER BY v.{quote('number')} DESC LIMIT 1) = %s)"
    )


def inputs_of(entry: Remembered, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The delivery's inputs as the full way computes them, or None if its input_mapping fails."""
    from .webhooks import webhook_inputs

    try:
        return webhook_inputs(trigger=entry, payload=payload,
                              variables=[variable["name"] for variable in entry.variables])
    except TemplateError:
        return None
